"""One expansion per request: the prompt resolved at submit (or shown as a preview) is the one stored and run;
regenerate reruns the parent's prompt with a new seed; the expander's details reach the API."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from imageloop.engine.pngmeta import png_parameters_text, split_parameters
from imageloop.prompts.expander import Expander, Expansion
from imageloop.prompts.language import Language
from imageloop.server.services import Services
from imageloop.storage import GenerationId, UserId
from tests.server.kit import make_user
from tests.server.test_generations_api import auth, wait_done

_events = itertools.count()


class ChangingExpander(Expander):
    """Expands intents about a fox differently on every call (declines the rest), counting its calls: a second
    expansion of one request shows up as a changed prompt and a call too many."""

    name = "changing"

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    @property
    def version(self) -> str:
        return "changing-1"

    def expand(self, intent: str, *, user: str | None = None, language: Language | None = None) -> Expansion | None:
        if "fox" not in intent:
            return None
        with self._lock:
            self.calls += 1
            call = self.calls
        provenance = [{"tag": "fox", "source": "intent", "added": False},
                      {"tag": f"take {call}", "source": "local_llm", "added": True}]
        return Expansion(prompt=f"fox, take {call}", negative="blurry", strategy=self.name, version=self.version,
                         language=language or "en", details={"provenance": provenance, "raw": ("a", "tuple")})


@pytest.fixture
def changing(services: Services) -> Iterator[ChangingExpander]:
    """The fake first in the app's chain for one test."""
    fake = ChangingExpander()
    services.prompts.expander.strategies.insert(0, fake)
    try:
        yield fake
    finally:
        services.prompts.expander.strategies.remove(fake)


def _post(client: TestClient, key: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/api/v1/generations", headers=auth(key), json=body)
    assert response.status_code == 202, response.text
    out: dict[str, Any] = response.json()
    return out


def test_an_intent_is_expanded_once_at_submit_and_the_worker_runs_that(
    client: TestClient, services: Services, changing: ChangingExpander
) -> None:
    user, key = make_user(services.storage, "once")
    accepted = _post(client, key, {"intent": "a fox in the snow", "negative_prompt": "ugly"})
    stored = services.storage.generations.get(UserId(user), GenerationId(accepted["id"]))
    assert stored.final_prompt is not None and "take 1" in stored.final_prompt  # stored before any worker ran
    done = wait_done(client, key, accepted["id"])
    assert done["status"] == "succeeded", done["error"]
    assert (done["final_prompt"], done["negative_prompt"]) == (stored.final_prompt, "ugly, blurry")
    assert (done["expander_strategy"], done["expander_version"]) == ("changing", "changing-1")
    assert changing.calls == 1
    assert any(word["tag"] == "take 1" and word["added"] for word in done["details"]["provenance"])
    assert done["details"]["raw"] == ["a", "tuple"]  # JSON-safe


def test_regenerate_runs_the_parents_prompt_with_a_new_seed_without_expanding(
    client: TestClient, services: Services, changing: ChangingExpander
) -> None:
    _, key = make_user(services.storage, "regenerate")
    parent = wait_done(client, key, _post(client, key, {"intent": "a fox", "params": {"steps": 3}})["id"])
    assert parent["status"] == "succeeded", parent["error"]
    action = client.post("/api/v1/actions", headers=auth(key), json={
        "type": "regenerate", "image_id": parent["images"][0]["id"], "client_event_id": f"re-{next(_events)}"})
    assert action.status_code == 201, action.text
    child = wait_done(client, key, action.json()["child_generation_id"])
    assert child["status"] == "succeeded", child["error"]
    assert changing.calls == 1  # the chain, which would answer differently now, was not asked again
    for name in ("final_prompt", "negative_prompt", "expander_strategy", "expander_version", "details"):
        assert child[name] == parent[name], name
    assert {k: v for k, v in child["params"].items() if k != "seed"} == \
        {k: v for k, v in parent["params"].items() if k != "seed"}
    assert child["params"]["seed"] != parent["params"]["seed"]
    assert child["parent_id"] == parent["id"]


def test_generating_from_a_preview_runs_the_previewed_prompt(
    client: TestClient, services: Services, changing: ChangingExpander
) -> None:
    _, key = make_user(services.storage, "preview")
    preview = client.post("/api/v1/prompts/expand", headers=auth(key),
                          json={"intent": "a fox at dawn", "negative_prompt": "ugly"})
    assert preview.status_code == 200, preview.text
    shown = preview.json()
    assert "take 1" in shown["final_prompt"] and shown["negative_prompt"] == "ugly, blurry"
    assert {"tag": "fox", "source": "intent", "added": False} in shown["details"]["provenance"]
    # The page sends the preview's id; the intent may be repeated or left out.
    first = _post(client, key, {"expansion_id": shown["expansion_id"], "intent": "a fox at dawn",
                                "negative_prompt": "ugly"})
    second = _post(client, key, {"expansion_id": shown["expansion_id"]})
    for accepted, negative in ((first, "ugly, blurry"), (second, "blurry")):
        done = wait_done(client, key, accepted["id"])
        assert done["status"] == "succeeded", done["error"]
        assert (done["final_prompt"], done["negative_prompt"]) == (shown["final_prompt"], negative)
        assert done["intent"] == "a fox at dawn" and done["details"] == shown["details"]
    assert changing.calls == 1  # previewed once, expanded once


def test_a_preview_id_that_is_not_usable_is_a_422_naming_it(
    client: TestClient, services: Services, changing: ChangingExpander
) -> None:
    user, key = make_user(services.storage, "preview-owner")
    _, other_key = make_user(services.storage, "preview-other")
    expansion_id = client.post("/api/v1/prompts/expand", headers=auth(key), json={"intent": "a fox"}).json()[
        "expansion_id"]
    for who, body, says in (
        (other_key, {"expansion_id": expansion_id}, "no such expanded prompt"),
        (key, {"expansion_id": "0" * 32}, "no such expanded prompt"),
        (key, {"expansion_id": expansion_id, "intent": "a cat"}, "another intent"),
        (key, {"expansion_id": expansion_id, "prompt": "a cat"}, "not both"),
    ):
        response = client.post("/api/v1/generations", headers=auth(who), json=body)
        assert response.status_code == 422, response.text
        assert response.json()["field"] == "expansion_id" and says in response.json()["message"]
    assert services.storage.generations.history(UserId(user)).items == ()


def test_an_explicit_prompt_is_stored_at_submit_as_passthrough(client: TestClient, services: Services) -> None:
    user, key = make_user(services.storage, "explicit")
    accepted = _post(client, key, {"intent": "a fox", "prompt": "fox, watercolor"})
    stored = services.storage.generations.get(UserId(user), GenerationId(accepted["id"]))
    assert (stored.final_prompt, stored.expander_strategy) == ("fox, watercolor", "passthrough")


def test_a_batch_stores_each_prompt_at_submit(
    client: TestClient, services: Services, changing: ChangingExpander
) -> None:
    user, key = make_user(services.storage, "batch")
    shown = client.post("/api/v1/prompts/expand", headers=auth(key), json={"intent": "a fox"}).json()
    response = client.post("/api/v1/generations/batch", headers=auth(key), json={"generations": [
        {"intent": "a fox in a field"}, {"expansion_id": shown["expansion_id"]}, {"prompt": "fox, ink"}]})
    assert response.status_code == 202, response.text
    stored = [services.storage.generations.get(UserId(user), GenerationId(item["id"]))
              for item in response.json()["generations"]]
    assert [record.final_prompt is not None for record in stored] == [True, True, True]
    assert stored[1].final_prompt == shown["final_prompt"] and stored[2].final_prompt == "fox, ink"
    assert changing.calls == 2  # the preview and the first item; nothing else is expanded, now or when they run
    for record in stored:
        assert wait_done(client, key, record.id)["status"] == "succeeded"
    assert changing.calls == 2


def test_an_intent_that_only_excludes_runs_an_empty_prompt_with_its_words_in_the_negative(
    client: TestClient, services: Services
) -> None:
    user, key = make_user(services.storage, "excluder")
    preview = client.post("/api/v1/prompts/expand", headers=auth(key), json={"intent": "不要有人"})
    assert preview.status_code == 200, preview.text
    shown = preview.json()
    assert (shown["final_prompt"], shown["negative_prompt"]) == ("", "people")
    assert shown["details"]["only_excludes"] is True
    for body in ({"expansion_id": shown["expansion_id"]}, {"intent": "no people", "params": {"seed": 3}}):
        done = wait_done(client, key, _post(client, key, body)["id"])
        assert done["status"] == "succeeded", done["error"]
        assert (done["final_prompt"], done["negative_prompt"]) == ("", "people")
        png = client.get(done["images"][0]["url"], headers=auth(key)).content
        prompt, negative, _ = split_parameters(png_parameters_text(png))
        assert (prompt, negative) == ("", "people")  # what ran
    stored = services.storage.generations.get(UserId(user), GenerationId(done["id"]))
    assert stored.final_prompt == ""
