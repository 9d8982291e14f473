"""Bad input of every kind gets a 4xx whose JSON names the field; never a 500."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from imageloop.server.services import Services
from tests.server.kit import make_user


@pytest.fixture(scope="module")
def key(services: Services) -> str:
    return make_user(services.storage, "bad-input-user")[1]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"intent": "a cat", "bogus": 1}, "bogus"),
        ({"intent": "a cat", "params": {"steps": 2, "cfg": 3}}, "params.cfg"),
        ({"intent": 5}, "intent"),
        ({"intent": "a cat", "params": {"steps": "many"}}, "params.steps"),
        ({"intent": "a cat", "params": {"steps": 0}}, "params.steps"),
        ({"intent": "a cat", "params": {"steps": 151}}, "params.steps"),  # over settings.engine.max_steps
        ({"intent": "a cat", "params": {"width": 100}}, "params.width"),
        ({"intent": "a cat", "params": {"width": 4096, "height": 4096}}, "params.width"),  # over max_pixels
        ({"intent": "a cat", "params": {"width": 4096, "height": 64}}, "params.width"),  # over 4 x native (64)
        ({"intent": "a cat", "params": {"seed": -2}}, "params.seed"),
        ({"intent": "a cat", "params": {"scheduler": "Warp drive"}}, "params.scheduler"),
        ({"intent": "a cat", "n": 0}, "n"),
        ({"intent": "a cat", "n": 17}, "n"),  # over settings.engine.max_images
        ({"intent": "x" * 10_001}, "intent"),
        ({"intent": "   "}, "intent"),
        ({}, "intent"),
        ({"intent": "a cat", "recipe": "no-such-recipe"}, "recipe"),
        ({"intent": "a cat", "style": "no-such-style"}, "style"),
        ([1, 2], "body"),
    ],
)
def test_bad_generation_requests_name_the_field(client: TestClient, key: str, body: Any, field: str) -> None:
    response = client.post("/api/v1/generations", json=body, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert response.json()["error"] in {"InvalidRequestError", "UnknownNameError"}


def test_a_size_over_the_models_limit_names_the_field_and_the_maximum(client: TestClient, key: str) -> None:
    body = {"intent": "a cat", "params": {"width": 4096, "height": 64}}  # the tiny model is 64x64
    response = client.post("/api/v1/generations", json=body, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "params.width"
    assert "allowed: <= 256 (the model's native size 64 x engine.max_size_multiple 4)" in response.json()["message"]


def test_unknown_names_list_what_is_allowed(client: TestClient, key: str) -> None:
    response = client.post("/api/v1/generations", headers={"Authorization": f"Bearer {key}"},
                           json={"intent": "a cat", "params": {"scheduler": "Warp drive"}})
    assert "Euler a" in response.json()["allowed"]


def test_malformed_json_is_a_422_on_the_body(client: TestClient, key: str) -> None:
    response = client.post("/api/v1/generations", content=b'{"intent": ',
                           headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    assert (response.status_code, response.json()["field"]) == (422, "body")


def test_oversized_body_is_413(client: TestClient, key: str) -> None:
    response = client.post("/api/v1/generations", json={"intent": "a" * 70_000},
                           headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 413
    assert response.json()["field"] == "body"


def test_bad_query_and_path_values(client: TestClient, key: str) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/api/v1/history?limit=0", headers=headers).json()["field"] == "limit"
    assert client.get("/api/v1/history?limit=abc", headers=headers).json()["field"] == "limit"
    long_id = client.get("/api/v1/generations/" + "a" * 65, headers=headers)
    assert (long_id.status_code, long_id.json()["field"]) == (422, "generation_id")
    assert client.get("/api/v1/generations/nope", headers=headers).status_code == 404
    assert client.get("/api/v1/nowhere").status_code == 404
    assert client.delete("/api/v1/history", headers=headers).status_code == 405


def test_signed_file_links_reject_forgeries(client: TestClient) -> None:
    forged = client.get("/api/v1/files/images/x/0.png", params={"expires": 4_000_000_000, "signature": "00"})
    assert (forged.status_code, forged.json()["error"]) == (403, "PermissionDeniedError")
    assert client.get("/api/v1/files/images/x/0.png").status_code == 422  # no signature at all
    non_ascii = client.get("/api/v1/files/images/x/0.png", params={"expires": 4_000_000_000, "signature": "é"})
    assert non_ascii.status_code == 403  # found by schemathesis: was a 500
