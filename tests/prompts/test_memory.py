from __future__ import annotations

from imageloop.prompts.embeddings import default_embedder
from imageloop.prompts.expander.retrieval import RetrievalExpander
from imageloop.prompts.memory import PromptMemory
from imageloop.storage import ActionType, Storage
from tests.prompts.kit import finished, kept
from tests.records import act


def test_sync_remembers_kept_generations_and_forgets_unliked_ones(storage: Storage) -> None:
    ada, _ = storage.users.create_user("ada")
    memory = PromptMemory(storage, default_embedder())
    liked = kept(storage, ada.id, "a bleak rainy street", "rain, city street, bleak", params={"guidance_scale": 6.0})
    finished(storage, ada.id, "not kept", "fog")  # no action: not kept
    downloaded = finished(storage, ada.id, None, "a fox, explicit prompt")
    act(storage, ada.id, ActionType.DOWNLOAD, downloaded.images[0].id)
    assert memory.sync().added == 2
    assert memory.sync().added == 0  # idempotent
    entries = memory.entries(ada.id)
    assert {e.final_prompt for e in entries} == {"rain, city street, bleak", "a fox, explicit prompt"}
    assert next(e for e in entries if e.generation_id == liked.id).params == {"guidance_scale": 6.0}

    act(storage, ada.id, ActionType.UNLIKE, liked.images[0].id)
    assert memory.sync().removed == 1
    assert [e.final_prompt for e in memory.entries(ada.id)] == ["a fox, explicit prompt"]


def test_retrieval_reuses_a_kept_prompt_across_languages_and_declines_unrelated_intents(storage: Storage) -> None:
    ada, _ = storage.users.create_user("ada")
    bob, _ = storage.users.create_user("bob")
    cy, _ = storage.users.create_user("cy")
    memory = PromptMemory(storage, default_embedder())
    kept(storage, ada.id, "I want that really bleak feeling", "(monochrome:1.2), rain, lonely figure, bleak, sepia")
    kept(storage, ada.id, "a cozy warm evening at home", "small house, dusk, warm lighting")
    memory.sync()
    retrieval = RetrievalExpander(memory, threshold=0.6)

    # One other person's prompt carries their taste too: it is not reused for bob ...
    assert retrieval.expand("想要那种很丧的感觉", user=bob.id) is None
    # ... but ada gets her own back as it is.
    own = retrieval.expand("i want that really bleak feeling", user=ada.id)
    assert own is not None and own.prompt == "(monochrome:1.2), rain, lonely figure, bleak, sepia"
    assert own.details["reused"] == "own"

    # Once two people kept it, bob gets what they agree on (sepia was ada's alone), from Chinese.
    kept(storage, cy.id, "that really bleak feeling", "monochrome, rain, lonely figure, bleak, snow")
    memory.sync()
    reused = retrieval.expand("想要那种很丧的感觉", user=bob.id)
    assert reused is not None and reused.prompt == "(monochrome:1.2), rain, lonely figure, bleak"
    assert reused.strategy == "retrieval" and reused.language == "zh" and reused.details["reused"] == "community"
    assert reused.details["neighbours"][0]["similarity"] >= 0.6
    assert retrieval.expand("a spreadsheet of quarterly tax figures", user=bob.id) is None
    # min_users=1 reuses anyone's prompt whole.
    anyone = RetrievalExpander(memory, threshold=0.6, min_users=1).expand("a cozy evening at home", user=bob.id)
    assert anyone is not None and anyone.prompt == "small house, dusk, warm lighting"

    examples = retrieval.examples("cozy evening", k=2)
    assert examples[0].prompt == "small house, dusk, warm lighting"


def test_users_who_opt_out_are_not_retrieved_for_others_but_still_for_themselves(storage: Storage) -> None:
    ada, _ = storage.users.create_user("ada")
    bob, _ = storage.users.create_user("bob")
    memory = PromptMemory(storage, default_embedder())
    kept(storage, ada.id, "a dreamy foggy forest", "forest, fog, dreamy")
    memory.sync()
    storage.users.set_training_opt_out(ada.id, True)
    assert memory.similar_kept("dreamy forest in the fog", user_id=bob.id) == []
    assert memory.similar_kept("dreamy forest in the fog", user_id=ada.id)[0].prompt == "forest, fog, dreamy"
