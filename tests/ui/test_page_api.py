"""The routes the web page adds: the page itself, sign-in and keys, catalog and prompt preview, gallery and record,
share links, and the admin dashboard — through the real app on the tiny model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from imageloop.prompts.expand import ResolvedPrompt
from imageloop.prompts.expander import Recall
from imageloop.server.routes import ui_create
from imageloop.server.services import Services
from imageloop.storage.records import ModelKind, RunKind
from tests.server.kit import make_user
from tests.server.test_generations_api import auth, wait_done


@pytest.fixture(scope="module")
def owner(client: TestClient, services: Services) -> tuple[str, dict[str, Any]]:
    """A user with one finished generation of two images, in the cinematic style."""
    _, key = make_user(services.storage, "pageuser")
    accepted = client.post("/api/v1/generations", headers=auth(key),
                           json={"intent": "a red car <b>", "prompt": "a red car <b>", "n": 2, "style": "cinematic"})
    assert accepted.status_code == 202, accepted.text
    return key, wait_done(client, key, accepted.json()["id"])


def test_the_page_and_its_files_are_served_and_nothing_else(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<script type="module" src="/static/js/main.js">' in page.text
    script = client.get("/static/js/main.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert client.get("/static/app.css").headers["content-type"].startswith("text/css")
    for path in ("/static/../__init__.py", "/static/%2e%2e/__init__.py", "/static/nope.js", "/static/js",
                 "/static/app.css%00.js"):
        assert client.get(path).status_code == 404, path


def test_password_sign_in_issues_a_key_that_signing_out_revokes(client: TestClient, services: Services) -> None:
    user, _ = make_user(services.storage, "signer")
    services.storage.users.set_password(user, "correct horse")
    wrong = client.post("/api/v1/session", json={"name": "signer", "password": "wrong horse"})
    assert wrong.status_code == 401 and wrong.json()["message"] == "wrong user name or password"
    assert client.post("/api/v1/session", json={"name": "nobody", "password": "x"}).json() == wrong.json()
    assert client.post("/api/v1/session", json={"name": "signer"}).json()["field"] == "password"
    signed = client.post("/api/v1/session", json={"name": "signer", "password": "correct horse"})
    assert signed.status_code == 201
    body = signed.json()
    assert body["account"] == {"id": user, "name": "signer", "is_admin": False, "training_opt_out": False,
                               "has_password": True}
    key = body["api_key"]
    assert client.get("/api/v1/account", headers=auth(key)).json()["name"] == "signer"
    assert body["key"]["id"] in [k["id"] for k in client.get("/api/v1/users/me/api-keys", headers=auth(key)).json()]
    revoked = client.delete(f"/api/v1/users/me/api-keys/{body['key']['id']}", headers=auth(key))
    assert revoked.status_code == 200 and revoked.json()["active"] is False
    assert client.get("/api/v1/account", headers=auth(key)).status_code == 401


def test_api_keys_are_listed_newest_first_created_once_and_revoked(client: TestClient, services: Services) -> None:
    _, key = make_user(services.storage, "keyholder")
    created = client.post("/api/v1/users/me/api-keys", headers=auth(key))
    assert created.status_code == 201
    new_key = created.json()["api_key"]
    assert new_key.startswith(created.json()["key"]["prefix"])
    listed = client.get("/api/v1/users/me/api-keys", headers=auth(new_key)).json()
    assert listed[0]["id"] == created.json()["key"]["id"] and len(listed) == 2
    assert all("api_key" not in k for k in listed)
    _, other = make_user(services.storage, "keythief")
    assert client.delete(f"/api/v1/users/me/api-keys/{listed[1]['id']}", headers=auth(other)).status_code == 404
    assert client.get("/api/v1/users/me/api-keys").status_code == 401


def test_catalog_and_prompt_preview(client: TestClient, owner: tuple[str, dict[str, Any]]) -> None:
    key, _ = owner
    styles = client.get("/api/v1/styles", headers=auth(key)).json()
    # The tiny model is open-vocabulary: no preset is marked as meaning nothing to it.
    assert {"name": "cinematic", "name_en": "Cinematic", "name_zh": "电影感", "means_nothing": False,
            "note": None} in styles
    assert client.get("/api/v1/recipes", headers=auth(key)).json() == []
    preview = client.post("/api/v1/prompts/expand", headers=auth(key), json={"intent": "雨夜里孤独的城市"})
    assert preview.status_code == 200, preview.text
    assert preview.json()["final_prompt"].strip() and preview.json()["strategy"]
    empty = client.post("/api/v1/prompts/expand", headers=auth(key), json={"intent": ""})
    assert empty.status_code == 422 and empty.json()["field"] == "intent"


def test_the_usual_returns_the_recalled_settings(
    client: TestClient, owner: tuple[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    key, _ = owner
    seen: dict[str, Any] = {}

    def recalling(**kwargs: Any) -> ResolvedPrompt:
        seen.update(kwargs)
        recall = Recall(params={"guidance_scale": 5.5, "width": 512}, recipe=None, style="cinematic")
        return ResolvedPrompt("cat, cinematic lighting", None, "memory", "m1", "en", recall=recall)

    monkeypatch.setattr(ui_create, "resolve_prompt", recalling)
    out = client.post("/api/v1/prompts/expand", headers=auth(key), json={"intent": "the usual"}).json()
    assert out["recall"] == {"params": {"guidance_scale": 5.5, "width": 512}, "recipe": None, "style": "cinematic"}
    assert (out["strategy"], seen["intent"], seen["prompt"]) == ("memory", "the usual", None)
    assert seen["user_id"] == client.get("/api/v1/account", headers=auth(key)).json()["id"]


def test_gallery_filters_and_the_full_record(client: TestClient, owner: tuple[str, dict[str, Any]]) -> None:
    key, generation = owner
    liked, other = (image["id"] for image in generation["images"])
    like = {"type": "like", "client_event_id": "page-like-1", "image_id": liked}
    assert client.post("/api/v1/actions", headers=auth(key), json=like).status_code == 201
    assert client.post("/api/v1/actions", headers=auth(key), json=like).status_code == 200  # a retry
    items = client.get("/api/v1/gallery?filter=liked", headers=auth(key)).json()["items"]
    assert [item["id"] for item in items] == [generation["id"]]
    reactions = items[0]["reactions"]
    assert reactions[liked] == {"liked": True, "kept": True, "downloaded": False, "shared": False, "discarded": False}
    assert reactions[other]["liked"] is False
    assert client.get("/api/v1/gallery?style=photographic", headers=auth(key)).json()["items"] == []
    bad = client.get("/api/v1/gallery?filter=favourite", headers=auth(key))
    assert bad.status_code == 422 and bad.json()["field"] == "filter"
    record = client.get(f"/api/v1/generations/{generation['id']}/record", headers=auth(key)).json()
    assert [a["type"] for a in record["actions"]] == ["like"]  # the retry recorded nothing more
    assert record["generation"]["final_prompt"] and record["children"] == []
    _, stranger = make_user(client.app.state.services.storage, "stranger")  # type: ignore[attr-defined]
    assert client.get(f"/api/v1/generations/{generation['id']}/record", headers=auth(stranger)).status_code == 404


def test_share_links_work_signed_out_until_revoked(client: TestClient, owner: tuple[str, dict[str, Any]]) -> None:
    key, generation = owner
    image_id = generation["images"][0]["id"]
    body = {"image_id": image_id, "client_event_id": "share-1"}
    first = client.post("/api/v1/shares", headers=auth(key), json=body)
    again = client.post("/api/v1/shares", headers=auth(key), json=body)
    assert (first.status_code, again.status_code) == (201, 200)
    link = first.json()
    assert again.json()["id"] == link["id"] and link["active"]
    token = link["url"].rsplit("/s/", 1)[1]
    page = client.get(f"/s/{token}")  # no Authorization header
    assert page.status_code == 200 and "&lt;b&gt;" in page.text and "<b>" not in page.text
    png = client.get(f"/api/v1/shared/{token}/image")
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    assert client.get(f"/api/v1/shared/{token}").json()["width"] == generation["images"][0]["width"]
    record = client.get(f"/api/v1/generations/{generation['id']}/record", headers=auth(key)).json()
    assert [a["type"] for a in record["actions"]].count("share") == 1
    assert client.delete(f"/api/v1/shares/{link['id']}", headers=auth(key)).json()["active"] is False
    assert client.get(f"/s/{token}").status_code == 404
    assert client.get(f"/api/v1/shared/{token}/image").status_code == 404
    assert [s["active"] for s in client.get("/api/v1/shares", headers=auth(key)).json()] == [False]


def test_dashboard_is_for_admins_and_counts_the_record(
    client: TestClient, services: Services, owner: tuple[str, dict[str, Any]]
) -> None:
    key, generation = owner
    # its own like (the record must not depend on which other tests of this module ran first)
    like = {"type": "like", "client_event_id": "dashboard-like-1", "image_id": generation["images"][0]["id"]}
    assert client.post("/api/v1/actions", headers=auth(key), json=like).status_code in (200, 201)
    forbidden = client.get("/api/v1/dashboard", headers=auth(key))
    assert forbidden.status_code == 403 and "administrators" in forbidden.json()["message"]
    _, admin_key = services.storage.users.create_user("boss", is_admin=True)
    board = client.get("/api/v1/dashboard?fresh=true", headers=auth(admin_key))
    assert board.status_code == 200, board.text
    data = board.json()
    assert data["funnel"]["images"] >= 2 and data["funnel"]["kept"] >= 1 and data["funnel"]["by_action"]["like"] >= 1
    days = data["keep_rate_by_day"]
    assert len(days) == 30 and days[-1]["images"] >= 2 and days[-1]["keep_rate"] > 0
    assert days[0] == {"day": days[0]["day"], "images": 0, "kept": 0, "keep_rate": None}
    assert data["datasets"]["chains"] >= 1 and data["datasets"]["sft"] >= 1
    assert data["served_models"][0]["images"] >= 2
    assert {"recipe": "(none)", "style": "cinematic"}.items() <= data["recipes"][0].items()
    assert client.get("/api/v1/dashboard?days=0", headers=auth(admin_key)).json()["field"] == "days"
    assert (data["model_versions"], data["training_runs"]) == ([], [])


def test_dashboard_shows_the_model_registry_and_training_runs(
    client: TestClient, services: Services, tmp_path: Path
) -> None:
    _, admin_key = services.storage.users.create_user("registrar", is_admin=True)
    adapter = tmp_path / "adapter.safetensors"
    adapter.write_bytes(b"weights")
    registry = services.training.registry
    version = registry.register(ModelKind.EXPANDER, adapter, name="expander", data_hash="abc",
                                metrics={"win_rate": 0.61})
    registry.start_ab_test(version.id, 0.2)
    run = services.training.runs.create(RunKind.CYCLE, trigger="api", stage="export")
    data = client.get("/api/v1/dashboard", headers=auth(admin_key)).json()
    [shown] = data["model_versions"]
    assert (shown["id"], shown["status"], shown["traffic_share"]) == (version.id, "ab_test", 0.2)
    assert shown["metrics"] == {"win_rate": 0.61} and shown["ab_keep_rate"] == 0.0
    [listed] = data["training_runs"]
    assert (listed["id"], listed["status"], listed["stage"]) == (run.id, "queued", "export")


def test_the_model_route_names_the_family_and_the_controls_that_apply(client: TestClient, services: Services) -> None:
    _, key = make_user(services.storage, "model-reader")
    assert client.get("/api/v1/model").status_code == 401
    model = client.get("/api/v1/model", headers=auth(key)).json()
    assert (model["family"], model["label"], model["problem"]) == ("sd15", "SD1.5", None)
    assert "a CLIP-L text encoder" in model["needs"]
    assert "DPM++ 2M Karras" in model["samplers"] and "Euler" in model["samplers"]
    rules = {rule["name"]: rule for rule in model["controls"]}
    assert all(rules[name]["applies"] and rules[name]["why"] is None
               for name in ("negative_prompt", "scheduler", "clip_skip"))
    # The shared app configures neither add-on: each is hidden on the page, saying which setting enables it.
    assert rules["ip_adapter"] == {"name": "ip_adapter", "applies": False,
                                   "why": "no IP-Adapter is configured (engine.ip_adapter)"}
    assert not rules["controlnet"]["applies"] and "engine.controlnet" in rules["controlnet"]["why"]


def test_the_quote_lists_what_pasted_parameters_would_not_honour(client: TestClient, services: Services) -> None:
    _, key = make_user(services.storage, "paste-quoter")
    text = "a red boat\nSteps: 3, Sampler: Euler a, CFG scale: 6, Seed: 4, Size: 64x64, Model: deliberate_v2"
    quote = client.post("/api/v1/generations/quote", headers=auth(key), json={"parameters_text": text})
    assert quote.status_code == 200, quote.text
    assert [line.split(":")[0] for line in quote.json()["ignored"]] == ["Model"]
    plain = client.post("/api/v1/generations/quote", headers=auth(key), json={"prompt": "a red boat"})
    assert plain.json()["ignored"] == []
