"""Expansions stored with a generation at submit, and prompt previews (owner, expiry, deletion with the user)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from imageloop.errors import InvalidRequestError
from imageloop.storage import Expansion, NewGeneration, Storage, WorkerId
from tests.storage.conftest import FakeClock

DETAILS = {"provenance": [{"tag": "fox", "source": "intent", "added": False},
                          {"tag": "rim light", "source": "rules", "added": True}]}
SUBMITTED = Expansion(final_prompt="fox, rain, night, rim light", negative_prompt="blurry", expander_strategy="rules",
                      expander_version="rules-1", intent_language="en", details=DETAILS, recall={"style": "ink"})


def test_a_generation_stored_with_its_expansion_is_ready_to_run_and_keeps_it(storage: Storage) -> None:
    ada, _ = storage.users.create_user("ada")
    record = storage.generations.create(ada.id, NewGeneration(intent="a fox on a rainy night",
                                                              negative_prompt="blurry", expansion=SUBMITTED))
    assert (record.final_prompt, record.negative_prompt) == ("fox, rain, night, rim light", "blurry")
    assert (record.expander_strategy, record.expander_version, record.intent_language) == ("rules", "rules-1", "en")
    assert record.expansion_details == DETAILS and record.expansion_recall == {"style": "ink"}
    # A worker that would expand again (older code) cannot replace what was stored at submit.
    storage.generations.claim(WorkerId("w1"))
    again = storage.generations.record_expansion(record.id, Expansion(final_prompt="something else"))
    assert again.final_prompt == "fox, rain, night, rim light" and again.expansion_details == DETAILS


def test_a_generation_without_an_expansion_gets_the_workers_with_its_details(storage: Storage) -> None:
    ada, _ = storage.users.create_user("ada")
    record = storage.generations.create(ada.id, NewGeneration(intent="a fox"))
    assert record.final_prompt is None and record.expansion_details == {} and record.expansion_recall is None
    stored = storage.generations.record_expansion(record.id, SUBMITTED)
    assert stored.final_prompt == SUBMITTED.final_prompt and stored.expansion_details == DETAILS


def test_a_preview_is_its_owners_until_it_expires(storage: Storage, clock: FakeClock) -> None:
    ada, _ = storage.users.create_user("ada")
    bob, _ = storage.users.create_user("bob")
    preview = storage.previews.store(ada.id, "a fox on a rainy night", "en", SUBMITTED, ttl=timedelta(minutes=10))
    got = storage.previews.get(ada.id, preview.id)
    assert got.intent == "a fox on a rainy night" and got.expansion == SUBMITTED
    with pytest.raises(InvalidRequestError) as not_bobs:
        storage.previews.get(bob.id, preview.id)
    assert not_bobs.value.field == "expansion_id" and "no such expanded prompt" in not_bobs.value.message
    clock.advance(601)
    with pytest.raises(InvalidRequestError) as expired:
        storage.previews.get(ada.id, preview.id)
    assert expired.value.field == "expansion_id" and "expired" in expired.value.message


def test_previews_go_with_the_users_data(storage: Storage) -> None:
    ada, _ = storage.users.create_user("ada")
    preview = storage.previews.store(ada.id, "a fox", None, SUBMITTED, ttl=timedelta(hours=1))
    storage.users.delete_user_data(ada.id, storage.blobs)
    with pytest.raises(InvalidRequestError):
        storage.previews.get(ada.id, preview.id)


def test_an_empty_final_prompt_is_stored_only_beside_a_negative_prompt(storage: Storage) -> None:
    ada, _ = storage.users.create_user("ada")
    excluded = Expansion(final_prompt="", negative_prompt="people", expander_strategy="rules")
    record = storage.generations.create(ada.id, NewGeneration(intent="no people", expansion=excluded))
    assert (record.final_prompt, record.negative_prompt) == ("", "people")
    assert storage.previews.store(ada.id, "no people", "en", excluded, ttl=timedelta(hours=1)).expansion == excluded
    later = storage.generations.create(ada.id, NewGeneration(intent="no people"))
    assert storage.generations.record_expansion(later.id, excluded).final_prompt == ""
    for empty in (Expansion(final_prompt=""), Expansion(final_prompt=" ", negative_prompt=" ")):
        with pytest.raises(InvalidRequestError) as refused:
            storage.generations.create(ada.id, NewGeneration(intent="no people", expansion=empty))
        assert refused.value.field == "final_prompt" and "empty" in refused.value.message
        with pytest.raises(InvalidRequestError):
            storage.previews.store(ada.id, "no people", "en", empty, ttl=timedelta(hours=1))
