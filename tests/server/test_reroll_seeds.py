"""``jobs.reroll_seeds``: random rerolls by default; "derived" seeds (parent seed, depth) make the same chain of
actions give the same images, for every user and every run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from imageloop.engine.request import MAX_SEED
from imageloop.jobs.requests import derived_seed
from imageloop.server import create_app
from imageloop.server.services import Services
from tests.server.kit import make_user, tiny_settings
from tests.server.test_generations_api import auth, wait_done


@given(st.integers(0, MAX_SEED), st.integers(1, 10_000))
def test_derived_seed_is_a_pure_function_in_the_seed_range(seed: int, depth: int) -> None:
    assert derived_seed(seed, depth) == derived_seed(seed, depth)
    assert 0 <= derived_seed(seed, depth) <= MAX_SEED


def test_derived_seeds_differ_by_parent_and_depth() -> None:
    seeds = {derived_seed(seed, depth) for seed in range(50) for depth in range(1, 20)}
    assert len(seeds) == 50 * 19


@pytest.fixture(scope="module")
def derived_client(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[TestClient]:
    settings = tiny_settings(tmp_path_factory.mktemp("derived-data"), tiny_model, jobs={"reroll_seeds": "derived"})
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _chain(client: TestClient, name: str) -> list[dict[str, Any]]:
    """A first generation (seed 7), a reroll of it, an edit of that, and a reroll of the edit."""
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    _, key = make_user(services.storage, name)
    accepted = client.post("/api/v1/generations", headers=auth(key),
                           json={"intent": "red fox", "prompt": "a red fox", "params": {"seed": 7}})
    chain = [wait_done(client, key, accepted.json()["id"])]
    for step, extra in enumerate([{"type": "regenerate"}, {"type": "edit", "prompt": "a red fox, snow"},
                                  {"type": "regenerate"}]):
        action = client.post("/api/v1/actions", headers=auth(key), json={
            **extra, "image_id": chain[-1]["images"][0]["id"], "client_event_id": f"{name}-{step}"})
        assert action.status_code == 201, action.text
        chain.append(wait_done(client, key, action.json()["child_generation_id"]))
    return chain


def test_derived_rerolls_repeat_for_the_same_chain_of_actions(derived_client: TestClient) -> None:
    first, second = _chain(derived_client, "ada"), _chain(derived_client, "bob")
    seeds = [generation["params"]["seed"] for generation in first]
    assert seeds == [generation["params"]["seed"] for generation in second]
    assert seeds[1:] == [derived_seed(7, 1), derived_seed(seeds[1], 2), derived_seed(seeds[2], 3)]
    assert len(set(seeds)) == 4
    assert [g["images"][0]["sha256"] for g in first] == [g["images"][0]["sha256"] for g in second]


def test_random_rerolls_by_default(client: TestClient) -> None:
    first, second = _chain(client, "cyd"), _chain(client, "dee")
    assert first[0]["params"]["seed"] == second[0]["params"]["seed"] == 7
    assert first[1]["params"]["seed"] != second[1]["params"]["seed"]
