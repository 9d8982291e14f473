"""POST /api/v1/session through the real app: repeated wrong passwords answer 429 with Retry-After (for known and
unknown names alike, before any hash is computed), keys issued at sign-in carry an expiry, and the per-user key cap
answers 409 naming the limit."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from imageloop.server.services import Services
from imageloop.storage import users as users_module
from tests.server.kit import make_user
from tests.server.test_generations_api import auth


@pytest.fixture(scope="module")
def app_overrides() -> dict[str, Any]:
    # A long first wait, so the test never races the clock; the address limit high enough for the name tests.
    return {"auth": {"free_failures_per_account": 3, "free_failures_per_address": 12, "backoff_seconds": 600,
                     "max_api_keys_per_user": 3, "session_key_ttl_hours": 24}}


def _sign_in(client: TestClient, name: str, password: str) -> Any:
    return client.post("/api/v1/session", json={"name": name, "password": password})


@pytest.mark.parametrize("name", ["guarded", "no-such-user"])
def test_wrong_passwords_back_off_with_retry_after(
    client: TestClient, services: Services, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if name == "guarded":
        user, _ = make_user(services.storage, name)
        services.storage.users.set_password(user, "correct horse")
    answers = [_sign_in(client, name, f"guess {i}").status_code for i in range(4)]
    assert answers == [401, 401, 401, 401]  # three free failures, and the fourth starts the wait
    hashed: list[str] = []
    monkeypatch.setattr(users_module, "check_password", lambda password, stored: hashed.append(stored) or False)
    throttled = _sign_in(client, name, "correct horse")
    assert throttled.status_code == 429
    assert int(throttled.headers["retry-after"]) >= 590
    assert throttled.json()["retry_after"] == int(throttled.headers["retry-after"])
    assert "too many failed attempts" in throttled.json()["message"]
    assert hashed == []  # a throttled sign-in costs no scrypt hash


def test_a_sign_in_key_expires_and_the_key_cap_names_its_limit(client: TestClient, services: Services) -> None:
    user, first = make_user(services.storage, "capped")
    services.storage.users.set_password(user, "correct horse")
    signed = _sign_in(client, "capped", "correct horse")
    assert signed.status_code == 201, signed.text
    key = signed.json()["key"]
    assert key["expires_at"] is not None and key["active"] is True
    created = client.post("/api/v1/users/me/api-keys", headers=auth(first))
    assert created.status_code == 201  # three live keys now: the cap
    refused = client.post("/api/v1/users/me/api-keys", headers=auth(first))
    assert refused.status_code == 409 and "at most 3 live API keys" in refused.json()["message"]
    assert "auth.max_api_keys_per_user" in refused.json()["message"]
    # Signing in at the cap revokes the oldest sign-in key instead of locking the user out.
    again = _sign_in(client, "capped", "correct horse")
    assert again.status_code == 201
    assert client.get("/api/v1/account", headers=auth(signed.json()["api_key"])).status_code == 401
    assert client.get("/api/v1/account", headers=auth(again.json()["api_key"])).status_code == 200
