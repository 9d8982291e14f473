"""Share links are built from ``server.public_url`` or a trusted Host, never from a forged Host header; a retried
share request never brings back a link its owner revoked."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from imageloop.server.services import Services
from tests.server.kit import make_user
from tests.server.test_generations_api import auth, wait_done


@pytest.fixture(scope="module")
def shared_image(client: TestClient, services: Services) -> tuple[str, str]:
    _, key = make_user(services.storage, "sharer")
    accepted = client.post("/api/v1/generations", headers=auth(key), json={"prompt": "a red car", "n": 1})
    assert accepted.status_code == 202, accepted.text
    return key, wait_done(client, key, accepted.json()["id"])["images"][0]["id"]


def _share(client: TestClient, key: str, image_id: str, event: str, **headers: str) -> Any:
    return client.post("/api/v1/shares", headers={**auth(key), **headers},
                       json={"image_id": image_id, "client_event_id": event})


def test_a_forged_host_header_never_makes_a_link(client: TestClient, shared_image: tuple[str, str]) -> None:
    key, image_id = shared_image
    forged = _share(client, key, image_id, "host-1", host="evil.example")
    assert forged.status_code == 201
    assert forged.json()["url"].startswith("http://127.0.0.1:")  # the server's own address
    assert "evil.example" not in forged.text
    trusted = _share(client, key, image_id, "host-2", host="localhost:8123")
    assert trusted.json()["url"].startswith("http://localhost:8123/s/")


def test_a_retried_share_request_does_not_bring_back_a_revoked_link(
    client: TestClient, shared_image: tuple[str, str]
) -> None:
    key, image_id = shared_image
    first = _share(client, key, image_id, "revoke-me")
    assert first.status_code == 201
    assert client.delete(f"/api/v1/shares/{first.json()['id']}", headers=auth(key)).json()["active"] is False
    before = client.get("/api/v1/shares", headers=auth(key), params={"image_id": image_id}).json()
    retried = _share(client, key, image_id, "revoke-me")
    assert retried.status_code == 200
    assert retried.json()["id"] == first.json()["id"] and retried.json()["active"] is False
    token = first.json()["url"].rsplit("/s/", 1)[1]
    assert client.get(f"/s/{token}").status_code == 404
    assert client.get("/api/v1/shares", headers=auth(key), params={"image_id": image_id}).json() == before
