"""Whatever strategy answers, the intent is kept: its words, its negations, no contradictions, no invented words."""

from __future__ import annotations

import pytest

from imageloop.prompts.embeddings import default_embedder
from imageloop.prompts.expander import Expander, Expansion
from imageloop.prompts.expander.chain import ChainExpander
from imageloop.prompts.expander.guard import separate
from imageloop.prompts.expander.rules import RulesExpander
from imageloop.prompts.language import Language
from imageloop.prompts.memory import PromptMemory
from imageloop.storage import Storage
from tests.prompts.kit import kept


class Fixed(Expander):
    """A strategy that answers with a fixed prompt, as a drifting LLM or a retrieved prompt would."""

    def __init__(self, name: str, prompt: str, negative: str | None = None) -> None:
        self.name, self.prompt, self.negative = name, prompt, negative

    @property
    def version(self) -> str:
        return f"{self.name}-1"

    def expand(self, intent: str, *, user: str | None = None, language: Language | None = None) -> Expansion:
        return Expansion(self.prompt, self.negative, self.name, self.version, language or "en")


def tags(prompt: str) -> list[str]:
    return [t.strip() for t in prompt.split(",") if t.strip()]


def test_a_drifting_strategy_cannot_contradict_invent_repeat_or_drop_the_subject() -> None:
    drift = Fixed("local_llm", "rain, fox, foxy, moonlit, sunny, snowysunshine, snowysnow, night, night")
    result = ChainExpander([drift]).expand("雨夜里的小狐狸")
    positive = tags(result.prompt)
    assert {"fox", "rain", "night"} <= set(positive)
    assert "sunny" not in positive  # contradicts the rain
    assert not {"snowysunshine", "snowysnow"} & set(positive)  # not words
    assert len(positive) == len(set(positive))
    reasons = {d["tag"]: d["reason"] for d in result.details["dropped"]}
    assert reasons["sunny"].startswith("contradicts weather") and "not an English word" in reasons["snowysnow"]


def test_the_subject_of_a_chinese_intent_survives_any_strategy_in_english() -> None:
    result = ChainExpander([Fixed("local_llm", "bleak, lady, moonlit setting, snowy mountain")]).expand("孤独的宇航员")
    assert "astronaut" in result.prompt
    origin = {p["tag"]: (p["source"], p["added"]) for p in result.details["provenance"]}
    assert origin["astronaut"] == ("translation", False)
    assert origin["moonlit setting"] == ("local_llm", True)
    # The example: "lady" was a second subject the person never asked for.
    assert "lady" not in origin
    assert {"tag": "lady", "reason": "adds a person the intent did not name: lady"} in result.details["dropped"]


def test_an_added_tag_brings_no_person_the_intent_did_not_name() -> None:
    result = ChainExpander([Fixed("local_llm", "old man fishing, lady with a lantern, misty lake, old man's hat")]) \
        .expand("an old man fishing on a misty lake")
    assert "lady with a lantern" not in tags(result.prompt)
    assert "old man's hat" in tags(result.prompt)  # the man the intent named
    result = ChainExpander([Fixed("local_llm", "owl, book-lady, library")]).expand("an owl librarian")
    assert "book-lady" not in tags(result.prompt) and "library" in tags(result.prompt)
    # The lexicon's own tags are its values' meaning: a bleak mood's lonely figure stays.
    assert "lonely figure" in tags(ChainExpander([RulesExpander()]).expand("a bleak lighthouse").prompt)


@pytest.mark.parametrize("strategy", [
    Fixed("local_llm", "penguin, beach, rain, cheerful, sunny"),
    Fixed("retrieval", "penguin, beach, no rain, rainy sky"),
    RulesExpander(),
])
@pytest.mark.parametrize("intent", [
    "a cheerful penguin on the beach, no rain",
    "a cheerful penguin on the beach without rain",
    "海滩上快乐的企鹅，不要下雨",
])
def test_a_negated_word_is_never_in_the_positive_prompt(strategy: Expander, intent: str) -> None:
    result = ChainExpander([strategy]).expand(intent)
    assert "rain" in tags(result.negative or "")
    assert not any("rain" in tag.split() for tag in tags(result.prompt)), result.prompt
    assert "penguin" in result.prompt


@pytest.mark.parametrize("strategy", [
    Fixed("local_llm", "people, cinematic lighting"),
    Fixed("retrieval", "no people"),
    RulesExpander(),
])
@pytest.mark.parametrize("intent", ["no people", "without people", "不要有人"])
def test_an_intent_that_only_excludes_leaves_nothing_it_excluded_in_the_positive_prompt(
    strategy: Expander, intent: str
) -> None:
    result = ChainExpander([strategy]).expand(intent)
    assert tags(result.negative or "") == ["people"]
    assert not any("people" in tag.split() for tag in tags(result.prompt)), result.prompt
    assert not any(ord(c) > 127 for c in result.prompt)  # never the intent as typed
    if strategy.name == "rules":
        assert result.prompt == "" and result.details["only_excludes"]


def test_separate_lets_the_current_intent_win_and_otherwise_the_positive_prompt() -> None:
    both = Expansion("fox, rain, night", "rain, blurry", "memory", "m", "en")
    assert (separate(both).prompt, separate(both).negative) == ("fox, rain, night", "blurry")
    negated = separate(both, ["rain"])
    assert (negated.prompt, negated.negative) == ("fox, night", "rain, blurry")
    only = separate(Expansion("no rain", None, "retrieval", "r", "en"), ["rain"])
    assert (only.prompt, only.negative) == ("", None)  # emptied, never kept as it was


def test_the_usual_with_a_negation_moves_the_word_out_of_the_recalled_prompt(storage: Storage) -> None:
    ada, _ = storage.users.create_user("ada")
    memory = PromptMemory(storage, default_embedder())
    for subject in ("fox", "owl", "frog", "car"):
        kept(storage, ada.id, f"a {subject} in the rain", f"{subject}, rain, warm lighting")
    memory.sync()
    chain = ChainExpander([RulesExpander()], memory=memory)
    usual = chain.expand("the usual", user=ada.id)
    assert "rain" in tags(usual.prompt)
    dry = chain.expand("the usual, but no rain", user=ada.id)
    assert "rain" not in tags(dry.prompt) and "rain" in tags(dry.negative or "")
    dry_zh = chain.expand("老规矩，但是不要下雨", user=ada.id)
    assert "rain" not in tags(dry_zh.prompt) and "rain" in tags(dry_zh.negative or "")
    assert "warm lighting" in tags(dry_zh.prompt)  # the rest of the usual stays
    for result in (usual, dry, dry_zh):
        assert not set(tags(result.prompt)) & set(tags(result.negative or ""))


def test_the_chain_counts_each_strategys_outcomes_and_rejected_answers() -> None:
    chain = ChainExpander([Fixed("local_llm", "snowysunshine, sunny")])
    chain.expand("a fox in the rain")
    chain.expand("a fox in the snow")
    counts = chain.outcomes()
    assert counts[("local_llm", "used")] == 2
    assert counts[("local_llm", "rejected")] == 2  # nothing it added survived: the rules strategy answered
    result = chain.expand("a fox in the rain")
    assert result.strategy == "rules" and result.details["attempts"][-1]["outcome"] == "rejected"


def test_an_added_tag_that_only_changes_the_number_of_another_is_a_repeat() -> None:
    drift = Fixed("local_llm", "mountains, mountain, ink wash, soft light")
    result = ChainExpander([drift]).expand("mountains in ink wash")
    assert "mountain" not in tags(result.prompt)
    assert {"tag": "mountain", "reason": "repeats a tag"} in result.details["dropped"]


def test_an_added_era_cannot_contradict_the_era_the_expansion_already_gave() -> None:
    drift = Fixed("local_llm", "snow, courtyard, woman, old-fashioned, vintage, traditional, modern, rustic")
    result = ChainExpander([drift]).expand("古风庭院，下雪，一个女子")
    positive = tags(result.prompt)
    assert {"old-fashioned", "vintage", "traditional"} <= set(positive) and "modern" not in positive
    reasons = {d["tag"]: d["reason"] for d in result.details["dropped"]}
    assert reasons["modern"] == "contradicts era past"
    assert "futuristic" in ChainExpander([Fixed("local_llm", "futuristic, city")]).expand("a modern city").prompt


def test_laughter_cannot_be_added_to_a_sad_intent_nor_sorrow_to_a_cheerful_one() -> None:
    sad = ChainExpander([Fixed("local_llm", "clown, laughs, laughter, circus tent")]).expand("a sad clown")
    assert not {"laughs", "laughter"} & set(tags(sad.prompt)) and "circus tent" in tags(sad.prompt)
    happy = ChainExpander([Fixed("local_llm", "dog, tears, sorrowful, puddles")]).expand("a happy dog in the rain")
    assert not {"tears", "sorrowful"} & set(tags(happy.prompt)) and "puddles" in tags(happy.prompt)


def test_starlight_cannot_be_added_to_a_morning() -> None:
    result = ChainExpander([Fixed("local_llm", "village, starlight, chimney smoke")]).expand("a village in the morning")
    assert "starlight" not in tags(result.prompt) and "chimney smoke" in tags(result.prompt)


def test_warm_colours_contradict_cool_tones() -> None:
    # Seen on Chinese dev: the base model added "warm colors" to "冷色调" (cool tones, now an image term).
    result = ChainExpander([Fixed("local_llm", "lighthouse, cool tones, warm colors")]).expand("灯塔，冷色调")
    assert "warm colors" not in tags(result.prompt) and "cool tones" in tags(result.prompt)
