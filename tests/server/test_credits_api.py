"""Credits and tiers through the real app: quotes, debits, 402 with the refill time, tier limits (422), the request
rate and queued jobs (429 with Retry-After), the account's balance and history, and parallel submits over HTTP on
SQLite and PostgreSQL that never spend the same credits twice."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from imageloop.server import create_app
from imageloop.server.credits import generation_cost, image_cost
from imageloop.server.services import Services
from imageloop.storage import LedgerKind
from tests.server.kit import make_user, running_server, tiny_settings, wait_until
from tests.storage.dbs import backends, fresh_database

TIERS: dict[str, Any] = {
    "free": {"refill_credits": 10, "refill_period_hours": 24, "max_pixels": 128 * 128, "max_steps": 4,
             "max_images": 2, "max_queued_jobs": 3, "requests_per_minute": 1000},
    "tight": {"refill_credits": 100, "requests_per_minute": 2},
    "rich": {"refill_credits": 0, "requests_per_minute": 1000},
    "admin": {"refill_credits": 0},
}
CREDITS: dict[str, Any] = {"enabled": True, "tiers": TIERS, "reference_pixels": 64 * 64, "reference_steps": 2}
SMALL = {"steps": 2, "width": 64, "height": 64}


@pytest.fixture(scope="module")
def app_overrides() -> dict[str, Any]:
    return {"credits": CREDITS}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _finished(client: TestClient, key: str, generation_id: str) -> dict[str, Any]:
    body: dict[str, Any] = wait_until(
        lambda: client.get(f"/api/v1/generations/{generation_id}", headers=auth(key)).json(),
        lambda body: body["status"] in {"succeeded", "failed", "cancelled"})
    return body


def test_the_cost_model(services: Services) -> None:
    credits = services.settings.credits
    assert image_cost(SMALL, credits) == 1
    assert image_cost({"steps": 1, "width": 64, "height": 64}, credits) == 1  # less work costs the minimum
    assert image_cost({"steps": 2, "width": 128, "height": 128}, credits) == 4
    assert image_cost({"steps": 4, "width": 128, "height": 128}, credits) == 8
    assert image_cost({}, credits) == 1  # the model's defaults count as the reference
    assert image_cost({**SMALL, "hires_scale": 2.0}, credits) == 5  # and the hires pass at 4x the pixels
    assert generation_cost({**SMALL, "num_images": 3}, credits) == 3


def test_quote_then_submit_debits_and_the_account_shows_it(client: TestClient, services: Services) -> None:
    _, key = make_user(services.storage, "quote-user")
    body = {"intent": "a red cat", "n": 2, "params": {"steps": 2, "width": 128, "height": 64}}
    quote = client.post("/api/v1/generations/quote", headers=auth(key), json=body)
    assert quote.status_code == 200
    assert quote.json() | {"next_refill_at": None} == {
        "cost": 4, "per_image": 2, "n": 2, "tier": "free", "charged": True, "balance": 10, "next_refill_at": None,
        "affordable": True, "problem": None, "ignored": [], "notes": []}
    accepted = client.post("/api/v1/generations", headers=auth(key), json=body)
    assert accepted.status_code == 202
    assert _finished(client, key, accepted.json()["id"])["status"] == "succeeded"
    account = client.get("/api/v1/account", headers=auth(key)).json()["credits"]
    assert (account["balance"], account["tier"], account["enabled"]) == (6, "free", True)
    assert account["limits"]["max_steps"] == 4 and account["next_refill_at"]
    history = [(row["kind"], row["amount"], row["balance_after"]) for row in account["history"]]
    assert history == [("debit", -4, 6), ("refill", 10, 10)]
    assert account["history"][0]["generation_id"] == accepted.json()["id"]
    assert client.get("/api/v1/account/ledger?limit=1", headers=auth(key)).json()[0]["kind"] == "debit"


def test_out_of_credits_is_402_with_the_refill_time(client: TestClient, services: Services) -> None:
    _, key = make_user(services.storage, "poor-user")
    big = {"prompt": "a dog", "n": 2, "params": {"steps": 2, "width": 128, "height": 128}}  # 8 credits
    first = client.post("/api/v1/generations", headers=auth(key), json=big)
    assert first.status_code == 202
    quote = client.post("/api/v1/generations/quote", headers=auth(key), json=big).json()
    assert (quote["cost"], quote["balance"], quote["affordable"]) == (8, 2, False)
    refused = client.post("/api/v1/generations", headers=auth(key), json=big)
    assert refused.status_code == 402
    assert refused.json()["error"] == "OutOfCreditsError"
    assert "costs 8 credits and the balance is 2" in refused.json()["message"]
    assert 86_000 < int(refused.headers["retry-after"]) <= 86_400
    # The OpenAI route answers the same way.
    openai = client.post("/v1/images/generations", headers=auth(key), json={"prompt": "x", "n": 2,
                                                                            "size": "128x128"})
    assert openai.status_code == 402 and "credits" in openai.json()["error"]["message"]


def test_tier_limits_are_422_naming_the_field(client: TestClient, services: Services) -> None:
    _, key = make_user(services.storage, "limited-user")
    steps = client.post("/api/v1/generations", headers=auth(key), json={"prompt": "a", "params": {"steps": 5}})
    assert steps.status_code == 422
    assert (steps.json()["field"], steps.json()["allowed"]) == ("params.steps", "1..4")
    assert "free tier" in steps.json()["message"]
    n = client.post("/api/v1/generations", headers=auth(key), json={"prompt": "a", "n": 3})
    assert (n.status_code, n.json()["field"]) == (422, "n")
    size = client.post("/api/v1/generations", headers=auth(key),
                       json={"prompt": "a", "params": {"width": 256, "height": 128}})
    assert (size.status_code, size.json()["field"]) == (422, "params.width")
    batch = client.post("/api/v1/generations/batch", headers=auth(key),
                        json={"generations": [{"prompt": "a"}, {"prompt": "b", "params": {"steps": 9}}]})
    assert (batch.status_code, batch.json()["field"]) == (422, "generations.1.params.steps")
    quote = client.post("/api/v1/generations/quote", headers=auth(key), json={"prompt": "a", "params": {"steps": 5}})
    assert "params.steps" in quote.json()["problem"]
    assert client.get("/api/v1/account", headers=auth(key)).json()["credits"]["balance"] == 10  # nothing spent


def test_request_rate_is_429_with_retry_after(client: TestClient, services: Services) -> None:
    user_id, key = make_user(services.storage, "fast-user")
    services.storage.credits.set_tier(user_id, "tight")
    for _ in range(2):
        assert client.post("/api/v1/generations", headers=auth(key), json={"prompt": "a"}).status_code == 202
    third = client.post("/api/v1/generations", headers=auth(key), json={"prompt": "a"})
    assert third.status_code == 429
    assert "requests_per_minute" in third.json()["message"] and "tight tier allows 2" in third.json()["message"]
    assert 1 <= int(third.headers["retry-after"]) <= 60


def test_queued_jobs_limit_is_429_and_a_batch_is_all_or_nothing(client: TestClient, services: Services) -> None:
    _, key = make_user(services.storage, "queue-user")
    batch = client.post("/api/v1/generations/batch", headers=auth(key),
                        json={"generations": [{"prompt": word} for word in "abcd"]})
    assert batch.status_code == 429
    assert "queued_jobs" in batch.json()["message"] and batch.headers["retry-after"]
    account = client.get("/api/v1/account", headers=auth(key)).json()["credits"]
    assert account["balance"] == 10 and [row["kind"] for row in account["history"]] == ["refill"]


def test_unlimited_tiers_are_not_charged(client: TestClient, services: Services) -> None:
    user_id, key = make_user(services.storage, "admin-user")
    services.storage.credits.set_tier(user_id, "admin")
    accepted = client.post("/api/v1/generations", headers=auth(key),
                           json={"prompt": "a", "n": 3, "params": {"steps": 6}})
    assert accepted.status_code == 202
    account = client.get("/api/v1/account", headers=auth(key)).json()["credits"]
    assert (account["charged"], account["balance"], account["history"]) == (False, 0, [])


def test_a_reroll_costs_like_a_generation(client: TestClient, services: Services) -> None:
    _, key = make_user(services.storage, "reroll-user")
    accepted = client.post("/api/v1/generations", headers=auth(key), json={"prompt": "a cat", "params": SMALL})
    parent = _finished(client, key, accepted.json()["id"])
    action = client.post("/api/v1/actions", headers=auth(key), json={
        "type": "regenerate", "client_event_id": "reroll-1", "generation_id": parent["id"]})
    assert action.status_code == 201
    child = action.json()["child_generation_id"]
    kinds = [(e.kind, e.amount) for e in services.storage.credits.generation_entries(child)]
    assert kinds == [(LedgerKind.DEBIT, -1)]


@pytest.mark.parametrize("backend", backends())
def test_parallel_submits_over_http_never_spend_the_same_credits(
    backend: str, tmp_path: Path, tiny_model: Path
) -> None:
    with fresh_database(backend, tmp_path) as url:
        settings = tiny_settings(tmp_path / "data", tiny_model, database_url=url, credits=CREDITS)
        app = create_app(settings)
        with running_server(app) as base_url:
            services: Services = app.state.services
            user_id, key = make_user(services.storage, "parallel-user")
            services.storage.credits.set_tier(user_id, "rich")
            services.storage.credits.grant(user_id, 5)
            start, statuses, lock = threading.Barrier(12), [], threading.Lock()

            def submit() -> None:
                with httpx.Client(base_url=base_url, headers=auth(key), timeout=120) as http:
                    start.wait()
                    status = http.post("/api/v1/generations", json={"prompt": "a cat", "params": SMALL}).status_code
                with lock:
                    statuses.append(status)

            threads = [threading.Thread(target=submit) for _ in range(12)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert sorted(statuses) == [202] * 5 + [402] * 7
            assert services.storage.users.get(user_id).credits == 0
            debits = [e for e in services.storage.credits.history(user_id, limit=50) if e.kind is LedgerKind.DEBIT]
            assert len(debits) == 5


def test_a_quote_reads_pasted_parameters_as_the_submit_does(client: TestClient, services: Services) -> None:
    _, key = make_user(services.storage, "paste-user")
    pasted = "a fox in the snow\nSteps: 2, Sampler: Euler, CFG scale: 1, Seed: 5, Size: 128x128"
    quote = client.post("/api/v1/generations/quote", headers=auth(key), json={"parameters_text": pasted, "n": 2})
    assert quote.status_code == 200, quote.json()
    assert (quote.json()["per_image"], quote.json()["cost"]) == (4, 8)
    accepted = client.post("/api/v1/generations", headers=auth(key), json={"parameters_text": pasted, "n": 2})
    assert accepted.status_code == 202, accepted.json()
    assert client.get("/api/v1/account", headers=auth(key)).json()["credits"]["balance"] == 2
