"""The prompt service wired into the API: moderation at submit, "the usual" from kept images, recipe choices."""

from __future__ import annotations

import itertools

from fastapi.testclient import TestClient

from imageloop.engine.recipes import Recipe, RecipeStore
from imageloop.server.services import Services
from imageloop.storage import UserId
from imageloop.storage.recipe_choices import RecipeChoiceLog
from tests.server.kit import make_user
from tests.server.test_generations_api import auth, wait_done

_events = itertools.count()


def _like_all(client: TestClient, key: str, done: dict[str, object]) -> None:
    for image in done["images"]:  # type: ignore[attr-defined]
        liked = client.post("/api/v1/actions", headers=auth(key),
                            json={"type": "like", "image_id": image["id"], "client_event_id": f"like-{next(_events)}"})
        assert liked.status_code == 201, liked.text


def test_the_usual_after_kept_images_fills_the_params_left_open(client: TestClient, services: Services) -> None:
    user, key = make_user(services.storage, "usual-user")
    params = {"steps": 3, "guidance_scale": 2.0, "scheduler": "DDIM", "width": 64, "height": 64}
    for intent in ("a fox in the forest", "a castle at dusk"):
        accepted = client.post("/api/v1/generations", headers=auth(key), json={"intent": intent, "params": params})
        done = wait_done(client, key, accepted.json()["id"])
        assert done["status"] == "succeeded", done["error"]
        _like_all(client, key, done)
    # No waiting for the service's periodic memory sync: images kept a moment ago count for "the usual".

    usual = {"intent": "the usual", "params": {"seed": 7}}
    accepted = client.post("/api/v1/generations", headers=auth(key), json=usual)
    assert accepted.status_code == 202, accepted.text
    record = services.storage.generations.get(user, accepted.json()["id"])
    assert {key: record.params.get(key) for key in params} == params  # recalled, none of them given
    assert record.params["seed"] == 7  # what the request gave stays
    done = wait_done(client, key, record.id)
    assert done["status"] == "succeeded", done["error"]
    assert done["expander_strategy"] == "memory"  # the worker expanded it with the same service


def test_the_usual_without_kept_images_is_a_plain_422(client: TestClient, services: Services) -> None:
    user, key = make_user(services.storage, "no-history")
    response = client.post("/api/v1/generations", headers=auth(key), json={"intent": "老规矩"})
    assert response.status_code == 422
    assert response.json()["field"] == "intent" and "no kept images yet" in response.json()["message"]
    assert services.storage.generations.history(UserId(user)).items == ()


def test_a_blocked_intent_is_a_400_with_its_category_and_nothing_is_stored(
    client: TestClient, services: Services
) -> None:
    user, key = make_user(services.storage, "blocked-intent")
    response = client.post("/api/v1/generations", headers=auth(key), json={"intent": "p0rn", "negative_prompt": "gore"})
    assert response.status_code == 400
    assert response.json()["error"] == "ModerationError" and response.json()["category"] == "sexual"
    batch = client.post("/api/v1/generations/batch", headers=auth(key),
                        json={"generations": [{"intent": "a cat"}, {"intent": "p0rn"}]})
    assert batch.status_code == 400 and batch.json()["category"] == "sexual"
    assert services.storage.generations.history(UserId(user)).items == ()
    preview = client.post("/api/v1/prompts/expand", headers=auth(key), json={"intent": "p0rn"})
    assert preview.status_code == 400 and preview.json()["category"] == "sexual"


def test_an_explicit_blocked_prompt_is_a_400_but_negative_prompts_are_not_moderated(
    client: TestClient, services: Services
) -> None:
    user, key = make_user(services.storage, "blocked-prompt")
    response = client.post("/api/v1/generations", headers=auth(key), json={"prompt": "色 情"})
    assert response.status_code == 400 and response.json()["category"] == "sexual"
    openai = client.post("/v1/images/generations", headers=auth(key), json={"prompt": "p0rn"})
    assert openai.status_code == 400 and openai.json()["error"]["type"] == "ModerationError"
    assert services.storage.generations.history(UserId(user)).items == ()
    allowed = client.post("/api/v1/generations", headers=auth(key), json={"prompt": "a cat", "negative_prompt": "p0rn"})
    assert allowed.status_code == 202, allowed.text


def test_a_recipe_is_chosen_among_fitting_ones_and_its_propensity_logged(
    client: TestClient, services: Services
) -> None:
    store = RecipeStore(services.settings)
    for name in ("noir-soft", "noir-hard"):
        store.save(Recipe(name=name, steps=2, style="analog-film"))
    user, key = make_user(services.storage, "recipe-user")
    accepted = client.post("/api/v1/generations", headers=auth(key), json={"intent": "a cat", "style": "analog-film"})
    assert accepted.status_code == 202, accepted.text
    record = services.storage.generations.get(user, accepted.json()["id"])
    assert record.recipe in {"noir-soft", "noir-hard"}
    logged = RecipeChoiceLog(services.storage.sessions).get(record.id)
    assert (logged.recipe, logged.user_id) == (record.recipe, user)
    assert 0.0 < logged.propensity <= 1.0 and logged.policy == "thompson"
    assert {c["recipe"] for c in logged.candidates} == {"noir-soft", "noir-hard"}
    assert abs(sum(c["probability"] for c in logged.candidates) - 1.0) < 1e-6

    named = client.post("/api/v1/generations", headers=auth(key),
                        json={"intent": "a cat", "style": "analog-film", "recipe": "noir-hard"})
    assert services.storage.generations.get(user, named.json()["id"]).recipe == "noir-hard"
    other_style = client.post("/api/v1/generations", headers=auth(key), json={"intent": "a cat"})
    assert services.storage.generations.get(user, other_style.json()["id"]).recipe is None
    for generation_id in (named.json()["id"], other_style.json()["id"]):  # nothing chosen, nothing logged
        assert not _logged(services, generation_id)
    assert wait_done(client, key, record.id)["status"] == "succeeded"


def _logged(services: Services, generation_id: str) -> bool:
    from imageloop.errors import NotFoundError

    try:
        RecipeChoiceLog(services.storage.sessions).get(generation_id)
    except NotFoundError:
        return False
    return True
