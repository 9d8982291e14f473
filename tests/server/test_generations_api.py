"""The generations API end to end on the tiny model: submit, poll, images, SSE, batching, history, scoping."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient

from imageloop.engine.pngmeta import read_png_parameters
from imageloop.server.services import Services
from tests.server.kit import make_user, wait_until


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def wait_done(client: TestClient, key: str, generation_id: str) -> dict[str, Any]:
    body: dict[str, Any] = wait_until(
        lambda: client.get(f"/api/v1/generations/{generation_id}", headers=auth(key)).json(),
        lambda body: body["status"] in {"succeeded", "failed", "cancelled"})
    return body


def test_health_and_docs(client: TestClient) -> None:
    health = client.get("/healthz").json()
    assert health == {"status": "ok", "mode": "embedded", "queue_depth": health["queue_depth"], "worker": True,
                      "loading": []}
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/v1/generations", "/api/v1/actions", "/v1/images/generations", "/metrics"} <= set(paths)


def test_requests_need_a_valid_api_key(client: TestClient) -> None:
    missing = client.post("/api/v1/generations", json={"intent": "a cat"})
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["error"] == "AuthError"
    wrong = client.get("/api/v1/history", headers=auth("il_not-a-real-key"))
    assert wrong.status_code == 401


def test_generation_runs_and_records_everything(client: TestClient, services: Services) -> None:
    _, key = make_user(services.storage, "gen-user")
    accepted = client.post(
        "/api/v1/generations", headers=auth(key),
        json={"intent": "a red cat", "n": 2, "params": {"seed": 42}, "negative_prompt": "blurry"},
    )
    assert accepted.status_code == 202
    assert accepted.json()["status"] == "queued"
    assert accepted.json()["queue_position"] >= 1
    done = wait_done(client, key, accepted.json()["id"])
    assert done["status"] == "succeeded", done["error"]
    assert done["final_prompt"] == "red cat"  # the rules expander keeps unknown English words as tags
    assert done["expander_strategy"] == "rules" and done["expander_version"].startswith("rules-6+")
    assert [image["seed"] for image in done["images"]] == [42, 43]
    assert done["progress"] == {"step": 2, "total": 2}
    assert done["base_model_version"]
    png = client.get(done["images"][1]["url"], headers=auth(key))
    assert png.headers["content-type"] == "image/png"
    again = read_png_parameters(png.content)
    assert (again.prompt, again.negative_prompt, again.seed, again.steps) == ("red cat", "blurry", 43, 2)


def test_explicit_prompt_wins_over_intent(client: TestClient, services: Services) -> None:
    _, key = make_user(services.storage, "prompt-user")
    accepted = client.post("/api/v1/generations", headers=auth(key), json={"intent": "猫", "prompt": "a cat, oil"})
    done = wait_done(client, key, accepted.json()["id"])
    assert (done["intent"], done["final_prompt"]) == ("猫", "a cat, oil")


def test_batch_endpoint_runs_compatible_jobs_in_one_pipeline_call(client: TestClient, services: Services) -> None:
    _, key = make_user(services.storage, "batch-user")
    items = [{"prompt": word} for word in ("a dog", "a bird", "a tree")]
    accepted = client.post("/api/v1/generations/batch", headers=auth(key), json={"generations": items})
    assert accepted.status_code == 202
    ids = [item["id"] for item in accepted.json()["generations"]]
    done = [wait_done(client, key, generation_id) for generation_id in ids]
    assert [item["status"] for item in done] == ["succeeded"] * 3
    assert [item["final_prompt"] for item in done] == ["a dog", "a bird", "a tree"]
    assert {item["timings"]["batch_size"] for item in done} == {3}


def test_bad_batch_item_names_its_index_and_stores_nothing(client: TestClient, services: Services) -> None:
    _, key = make_user(services.storage, "bad-batch-user")
    items = [{"prompt": "a dog"}, {"prompt": "a cat", "params": {"scheduler": "Nope"}}]
    response = client.post("/api/v1/generations/batch", headers=auth(key), json={"generations": items})
    assert response.status_code == 422
    assert response.json()["field"] == "generations.1.params.scheduler"
    assert client.get("/api/v1/history", headers=auth(key)).json()["items"] == []


def test_another_users_things_are_not_found(client: TestClient, services: Services) -> None:
    _, owner = make_user(services.storage, "owner")
    _, other = make_user(services.storage, "stranger")
    done = wait_done(client, owner, client.post("/api/v1/generations", headers=auth(owner),
                                                json={"prompt": "a house"}).json()["id"])
    image_url = done["images"][0]["url"]
    for path in (f"/api/v1/generations/{done['id']}", image_url, f"/api/v1/generations/{done['id']}/events"):
        response = client.get(path, headers=auth(other))
        assert response.status_code == 404, path
        assert response.json()["error"] == "NotFoundError"
    assert client.post(f"/api/v1/generations/{done['id']}/cancel", headers=auth(other)).status_code == 404
    assert client.get("/api/v1/history", headers=auth(other)).json()["items"] == []


def test_history_pages_newest_first(client: TestClient, services: Services) -> None:
    _, key = make_user(services.storage, "history-user")
    ids = [client.post("/api/v1/generations", headers=auth(key), json={"prompt": f"a {word}"}).json()["id"]
           for word in ("cat", "dog", "bird")]
    first = client.get("/api/v1/history?limit=2", headers=auth(key)).json()
    assert [item["id"] for item in first["items"]] == ids[::-1][:2]
    second = client.get("/api/v1/history", params={"limit": 2, "cursor": first["next_cursor"]}, headers=auth(key))
    assert [item["id"] for item in second.json()["items"]] == [ids[0]]
    assert second.json()["next_cursor"] is None
    bad = client.get("/api/v1/history", params={"cursor": "garbage"}, headers=auth(key))
    assert (bad.status_code, bad.json()["field"]) == (422, "cursor")
    for generation_id in ids:
        wait_done(client, key, generation_id)


def test_sse_streams_snapshot_progress_and_final_status(client: TestClient, services: Services) -> None:
    _, key = make_user(services.storage, "sse-user")
    generation_id = client.post("/api/v1/generations", headers=auth(key),
                                json={"prompt": "a ship", "params": {"steps": 6}}).json()["id"]
    events: list[tuple[str, dict[str, Any]]] = []
    with client.stream("GET", f"/api/v1/generations/{generation_id}/events", headers=auth(key)) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        name = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "status" and kinds[-1] == "status"
    assert events[-1][1]["status"] == "succeeded" and len(events[-1][1]["images"]) == 1
    if events[0][1]["status"] == "queued":  # we subscribed before it ran: we saw it run
        steps = [data["step"] for kind, data in events if kind == "progress"]
        assert steps == sorted(steps) and steps[-1] == 6


def test_finished_stream_ends_at_once(client: TestClient, services: Services) -> None:
    _, key = make_user(services.storage, "sse-done-user")
    done = wait_done(client, key, client.post("/api/v1/generations", headers=auth(key),
                                              json={"prompt": "a sea"}).json()["id"])
    text = client.get(f"/api/v1/generations/{done['id']}/events", headers=auth(key)).text
    assert text.count("event: status") == 1 and '"status":"succeeded"' in text


def test_cancel_of_a_finished_job_changes_nothing(client: TestClient, services: Services) -> None:
    _, key = make_user(services.storage, "cancel-done-user")
    done = wait_done(client, key, client.post("/api/v1/generations", headers=auth(key),
                                              json={"prompt": "a sky"}).json()["id"])
    response = client.post(f"/api/v1/generations/{done['id']}/cancel", headers=auth(key))
    assert (response.status_code, response.json()["status"]) == (200, "succeeded")


def test_an_administrator_cancels_any_users_job_others_get_404(client: TestClient, services: Services) -> None:
    _, owner = make_user(services.storage, "cancel-owner")
    _, stranger = make_user(services.storage, "cancel-stranger")
    _, admin = services.storage.users.create_user("cancel-admin", is_admin=True)
    done = wait_done(client, owner, client.post("/api/v1/generations", headers=auth(owner),
                                                json={"prompt": "a hill"}).json()["id"])
    assert client.post(f"/api/v1/generations/{done['id']}/cancel", headers=auth(stranger)).status_code == 404
    response = client.post(f"/api/v1/generations/{done['id']}/cancel", headers=auth(admin))
    assert (response.status_code, response.json()["status"]) == (200, "succeeded")  # finished: unchanged
