"""Actions (idempotent, reroll chains, edits), privacy routes and metrics through the API."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from imageloop.server.services import Services
from tests.server.kit import make_user
from tests.server.test_generations_api import auth, wait_done


@pytest.fixture(scope="module")
def owner(client: TestClient, services: Services) -> tuple[str, dict[str, Any]]:
    """A user with one finished generation of two images."""
    _, key = make_user(services.storage, "actor")
    accepted = client.post("/api/v1/generations", headers=auth(key),
                           json={"intent": "blue bird", "prompt": "a blue bird", "n": 2, "params": {"seed": 7}})
    return key, wait_done(client, key, accepted.json()["id"])


def act(client: TestClient, key: str, **body: Any) -> Any:
    return client.post("/api/v1/actions", headers=auth(key), json=body)


def test_same_client_event_id_records_one_action(client: TestClient, owner: tuple[str, dict[str, Any]]) -> None:
    key, generation = owner
    image_id = generation["images"][0]["id"]
    first = act(client, key, type="like", client_event_id="like-1", image_id=image_id)
    again = act(client, key, type="like", client_event_id="like-1", image_id=image_id)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert (first.json()["created"], again.json()["created"]) == (True, False)
    assert first.json()["generation_id"] == generation["id"]
    conflict = act(client, key, type="download", client_event_id="like-1", image_id=image_id)
    assert conflict.status_code == 409


def test_regenerate_starts_a_linked_child_once(client: TestClient, owner: tuple[str, dict[str, Any]]) -> None:
    key, generation = owner
    image_id = generation["images"][1]["id"]
    first = act(client, key, type="regenerate", client_event_id="reroll-1", image_id=image_id)
    again = act(client, key, type="regenerate", client_event_id="reroll-1", image_id=image_id)
    child_id = first.json()["child_generation_id"]
    assert child_id and again.json()["child_generation_id"] == child_id
    child = wait_done(client, key, child_id)
    assert child["status"] == "succeeded"
    assert (child["parent_id"], child["chain_id"]) == (generation["id"], generation["chain_id"])
    assert child["intent"] == generation["intent"] and child["params"]["num_images"] == 2
    assert child["params"]["seed"] != generation["params"]["seed"]
    history = client.get("/api/v1/history?limit=100", headers=auth(key)).json()["items"]
    assert sum(item["parent_id"] == generation["id"] for item in history) == 1  # the retry made no second child


def test_edit_records_the_diff_and_runs_the_edited_prompt(
    client: TestClient, owner: tuple[str, dict[str, Any]]
) -> None:
    key, generation = owner
    response = act(client, key, type="edit", client_event_id="edit-1", image_id=generation["images"][0]["id"],
                   prompt="a red bird")
    assert response.status_code == 201
    edit = response.json()["edit"]
    assert (edit["prompt_before"], edit["prompt_after"]) == ("a blue bird", "a red bird")
    assert edit["token_distance"] == 1
    assert {"op": "replace", "before": "blue", "after": "red"} in edit["token_changes"]
    child = wait_done(client, key, response.json()["child_generation_id"])
    assert (child["final_prompt"], child["parent_id"]) == ("a red bird", generation["id"])


def test_action_mistakes_name_the_field(client: TestClient, owner: tuple[str, dict[str, Any]]) -> None:
    key, generation = owner
    image_id = generation["images"][0]["id"]
    cases = [
        ({"type": "edit", "client_event_id": "e-2", "image_id": image_id}, 422, "prompt"),
        ({"type": "like", "client_event_id": "e-3", "image_id": image_id, "prompt": "x"}, 422, "prompt"),
        ({"type": "like", "client_event_id": "e-4"}, 422, "image_id"),
        ({"type": "love", "client_event_id": "e-5", "image_id": image_id}, 422, "type"),
        ({"type": "like", "client_event_id": "", "image_id": image_id}, 422, "client_event_id"),
        ({"type": "like", "client_event_id": "e-6", "image_id": "missing"}, 404, None),
    ]
    for body, status, field in cases:
        response = client.post("/api/v1/actions", headers=auth(key), json=body)
        assert response.status_code == status, (body, response.text)
        assert response.json().get("field") == field, body


def test_actions_on_another_users_image_are_not_found(
    client: TestClient, services: Services, owner: tuple[str, dict[str, Any]]
) -> None:
    _, generation = owner
    _, other = make_user(services.storage, "nosy")
    response = act(client, other, type="like", client_event_id="x-1", image_id=generation["images"][0]["id"])
    assert response.status_code == 404


def test_metrics_count_actions_images_and_latency(client: TestClient, owner: tuple[str, dict[str, Any]]) -> None:
    key, generation = owner
    act(client, key, type="download", client_event_id="dl-1", image_id=generation["images"][0]["id"])
    text = client.get("/metrics").text
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line and line[0] != "#"}
    assert values['imageloop_actions_total{type="download"}'] >= 1
    assert values["imageloop_images_generated_total"] >= 2
    assert 0 < values["imageloop_keep_rate"] <= 1
    assert values["imageloop_job_latency_seconds_count"] >= 1
    assert values['imageloop_jobs_finished_total{status="succeeded"}'] >= 1
    assert "imageloop_queue_depth" in values
    # the generation ran its denoiser: seconds and passes of it (the rest of a request's time is overhead)
    assert values["imageloop_denoiser_seconds_total"] > 0 and values["imageloop_denoiser_passes_total"] >= 1


def test_metrics_count_expansions_by_strategy_and_outcome(client: TestClient, services: Services) -> None:
    _, key = make_user(services.storage, "expander-metrics")
    accepted = client.post("/api/v1/generations", headers=auth(key), json={"intent": "a lighthouse in the fog"})
    assert accepted.status_code == 202, accepted.text
    text = client.get("/metrics").text
    counted = [line for line in text.splitlines() if line.startswith("imageloop_expander_outcomes_total{")]
    assert any('outcome="used"' in line and float(line.split(" ")[1]) >= 1 for line in counted), counted


def test_opt_out_and_delete_my_data(client: TestClient, services: Services) -> None:
    _, key = make_user(services.storage, "leaver")
    done = wait_done(client, key, client.post("/api/v1/generations", headers=auth(key),
                                              json={"prompt": "a tree"}).json()["id"])
    act(client, key, type="like", client_event_id="l-1", image_id=done["images"][0]["id"])
    opted = client.put("/api/v1/users/me/training-opt-out", headers=auth(key), json={"opt_out": True})
    assert opted.json()["training_opt_out"] is True
    assert client.get("/api/v1/users/me", headers=auth(key)).json()["training_opt_out"] is True
    assert client.put("/api/v1/users/me/training-opt-out", headers=auth(key), json={"opt_out": "yes"}).json()[
        "field"] == "opt_out"
    deleted = client.delete("/api/v1/users/me/data", headers=auth(key)).json()
    assert deleted == {"generations": 1, "images": 1, "actions": 1, "blobs": 1}
    assert client.get(f"/api/v1/generations/{done['id']}", headers=auth(key)).status_code == 404
    assert client.get(done["images"][0]["url"], headers=auth(key)).status_code == 404
    assert not services.storage.blobs.exists(f"images/{done['id']}/0.png")
    assert client.get("/api/v1/history", headers=auth(key)).json()["items"] == []
