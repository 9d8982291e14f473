from __future__ import annotations

import pytest

from imageloop.errors import InvalidRequestError
from imageloop.flywheel.editdiff import edit_details
from imageloop.prompts.embeddings import default_embedder
from imageloop.prompts.expander import Expander, Expansion, StrategyFailed
from imageloop.prompts.expander.chain import ChainExpander
from imageloop.prompts.expander.rules import RulesExpander
from imageloop.prompts.language import Language
from imageloop.prompts.lexicon import load_lexicon
from imageloop.prompts.memory import PromptMemory
from imageloop.storage import ActionType, NewGeneration, Storage
from tests.prompts.kit import finished, kept
from tests.records import act, finish, png


class Scripted(Expander):
    """A strategy whose behaviour the test sets: answer, decline, fail or crash."""

    def __init__(self, name: str, behaviour: str) -> None:
        self.name = name
        self.behaviour = behaviour
        self.calls = 0

    @property
    def version(self) -> str:
        return f"{self.name}-v1"

    def expand(self, intent: str, *, user: str | None = None, language: Language | None = None) -> Expansion | None:
        self.calls += 1
        if self.behaviour == "decline":
            return None
        if self.behaviour == "fail":
            raise StrategyFailed("model missing")
        if self.behaviour == "crash":
            raise RuntimeError("boom")
        return Expansion(f"{self.name} prompt", None, self.name, self.version, language or "en")


def test_strategies_run_in_order_and_the_first_answer_wins() -> None:
    first, second = Scripted("a", "decline"), Scripted("b", "answer")
    third = Scripted("c", "answer")
    result = ChainExpander([first, second, third]).expand("a fox")
    # The intent's own word ("fox") is put first: a strategy may add to the intent, never drop from it.
    assert (result.prompt, result.strategy, result.version) == ("fox, b prompt", "b", "b-v1")
    assert third.calls == 0
    assert [a["outcome"] for a in result.details["attempts"]] == ["declined", "used"]


def test_failures_and_crashes_fall_through_to_the_rules() -> None:
    result = ChainExpander([Scripted("llm", "fail"), Scripted("remote", "crash")]).expand("a fox at night")
    assert result.strategy == "rules" and result.prompt == "fox, night"
    attempts = result.details["attempts"]
    assert [(a["strategy"], a["outcome"]) for a in attempts] == [("llm", "failed"), ("remote", "failed"),
                                                                 ("rules", "used")]
    assert "boom" in attempts[1]["error"]


def test_an_empty_intent_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequestError) as error:
        ChainExpander([RulesExpander()]).expand("   ")
    assert error.value.field == "intent"


def test_the_usual_without_history_says_so_plainly(storage: Storage) -> None:
    ada, _ = storage.users.create_user("ada")
    chain = ChainExpander([RulesExpander()], memory=PromptMemory(storage, default_embedder()))
    for phrase in ("the usual", "老规矩", "照旧", "same as last time"):
        with pytest.raises(InvalidRequestError, match="no kept images yet") as error:
            chain.expand(phrase, user=ada.id)
        assert error.value.field == "intent"


def test_the_usual_recalls_favourite_lighting_recipe_cfg_size_and_style(storage: Storage) -> None:
    ada, _ = storage.users.create_user("ada")
    memory = PromptMemory(storage, default_embedder())
    size = {"width": 512, "height": 768}
    kept(storage, ada.id, "a fox", "fox, forest, warm lighting, rim light glow", recipe="film", style="cinematic",
         params={"guidance_scale": 6.0, **size})
    kept(storage, ada.id, "a castle", "castle, mountains, warm lighting, rim light glow", recipe="film",
         style="cinematic", params={"guidance_scale": 7.0, **size})
    kept(storage, ada.id, "a car", "car, city street, warm lighting, dusk", recipe="clean", style="cinematic",
         params={"guidance_scale": 6.5, "width": 512, "height": 512})
    memory.sync()
    chain = ChainExpander([RulesExpander()], memory=memory)

    usual = chain.expand("老规矩", user=ada.id)
    assert usual.strategy == "memory" and usual.recall is not None
    assert usual.prompt.startswith("warm lighting, rim light glow")
    assert usual.details["lighting"] == ["warm lighting", "rim light glow"]
    assert (usual.recall.recipe, usual.recall.style) == ("film", "cinematic")
    assert usual.recall.params == {"guidance_scale": 6.5, "width": 512, "height": 768}

    last = chain.expand("same as last time", user=ada.id)
    assert last.prompt == "car, city street, warm lighting, dusk"
    assert last.recall is not None and last.recall.recipe == "clean" and last.recall.params["height"] == 512

    at_night = chain.expand("the usual, but at night with cold light", user=ada.id)
    assert "night" in at_night.prompt and "cold lighting" in at_night.prompt
    assert "warm lighting" not in at_night.prompt and "rim light glow" in at_night.prompt


def test_personalisation_picks_the_look_a_user_keeps_once_they_have_enough_history(storage: Storage) -> None:
    ada, _ = storage.users.create_user("ada")
    memory = PromptMemory(storage, default_embedder())
    # Habits off (min_evidence out of reach), to see the re-ranking alone.
    chain = ChainExpander([RulesExpander()], memory=memory, min_kept=5, min_evidence=1000)
    subjects = ["fox", "castle", "car", "tent", "church"]
    for subject in subjects[:4]:
        kept(storage, ada.id, f"a {subject}", f"{subject}, cinematic lighting, (monochrome:1.1)")
    memory.sync()
    assert chain.expand("a penguin on the beach", user=ada.id).prompt == "penguin, beach"  # 4 kept: not yet
    kept(storage, ada.id, "a church", "church, cinematic lighting, (monochrome:1.1)")
    memory.sync()
    result = chain.expand("a penguin on the beach", user=ada.id)
    assert load_lexicon().attributes_in(result.prompt)["colour"] == {"monochrome"}
    assert result.details["personalized"]["changed"] is True
    assert chain.expand("a penguin on the beach").prompt == "penguin, beach"  # anonymous: no taste


def test_what_a_user_adds_by_hand_fills_what_their_next_intents_leave_open(storage: Storage) -> None:
    ada, _ = storage.users.create_user("ada")
    bob, _ = storage.users.create_user("bob")
    memory = PromptMemory(storage, default_embedder())
    chain = ChainExpander([RulesExpander()], memory=memory, min_evidence=2)
    for subject in ("fox", "owl"):
        first = finished(storage, ada.id, f"a {subject}", subject)
        after = f"{subject}, night, sepia"
        child = act(storage, ada.id, ActionType.EDIT, first.images[0].id, edit=edit_details(subject, after),
                    child=NewGeneration(prompt=after, params={}))
        assert child is not None
        finish(storage, child, after, [png((0, 0, 0))])  # seen, not kept: the edit alone is the sign
        if subject == "fox":
            assert chain.expand("a penguin", user=ada.id).prompt == "penguin"  # one sign: not a habit yet
    result = chain.expand("a penguin", user=ada.id)
    assert result.prompt == "penguin, night, sepia"
    assert result.details["personal_values"]["applied"] == {"time": "night", "colour": "sepia"}
    assert chain.expand("a penguin at dawn in full colour", user=ada.id).prompt.count("sepia") == 0
    assert chain.expand("a penguin", user=bob.id).prompt == "penguin"  # another user's habits stay theirs
    off = ChainExpander([RulesExpander()], memory=memory, personalization=False)
    assert off.expand("a penguin", user=ada.id).prompt == "penguin"
