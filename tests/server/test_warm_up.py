"""Warm-up: the server starts without waiting for models; /healthz says "starting" (503) and names what is still
loading until the expander's LLM and the engine are ready; a generation submitted meanwhile is queued at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import imageloop.prompts.service as prompt_service
from imageloop.prompts.expander import Expander, Expansion
from imageloop.prompts.language import Language
from imageloop.server import create_app
from imageloop.server.services import default_engine_factory
from tests.server.kit import HANG_GUARD_SECONDS, Gate, make_user, tiny_settings, wait_until
from tests.server.test_generations_api import auth, wait_done


class LoadingLLM(Expander):
    """Stands in for the local LLM strategy: loads on a thread held at ``GATE`` and declines until loaded."""

    name = "local_llm"
    gate: Gate
    built: list[LoadingLLM]

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        self._loaded = threading.Event()
        self.built.append(self)

    @property
    def version(self) -> str:
        return "loading-1"

    def start_loading(self) -> None:
        threading.Thread(target=self._load, daemon=True).start()

    def _load(self) -> None:
        self.gate.pass_through()
        self._loaded.set()

    def load(self) -> None:
        assert self._loaded.wait(HANG_GUARD_SECONDS), "the test never let the LLM load"

    @property
    def ready(self) -> bool:
        return self._loaded.is_set()

    def expand(self, intent: str, *, user: str | None = None, language: Language | None = None) -> Expansion | None:
        if not self.ready:
            return None
        return Expansion(prompt="llm words", negative=None, strategy=self.name, version=self.version,
                         language=language or "en")


@pytest.fixture
def gates(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Gate, Gate]]:
    """(the LLM's load, the engine's load): the prompt service builds ``LoadingLLM`` for ``local_llm``."""
    llm, engine = Gate(), Gate()
    monkeypatch.setattr(LoadingLLM, "gate", llm, raising=False)
    monkeypatch.setattr(LoadingLLM, "built", [], raising=False)
    monkeypatch.setattr(prompt_service, "LocalLLMExpander", LoadingLLM)
    yield llm, engine
    llm.open()
    engine.open()


def _health(client: TestClient) -> tuple[int, dict[str, Any]]:
    response = client.get("/healthz")
    body: dict[str, Any] = response.json()
    return response.status_code, body


def test_the_server_is_starting_until_its_models_are_loaded_and_queues_meanwhile(
    tmp_path: Path, tiny_model: Path, gates: tuple[Gate, Gate]
) -> None:
    llm, engine = gates
    settings = tiny_settings(tmp_path / "data", tiny_model, prompts={"strategies": ["local_llm", "rules"]})
    build = default_engine_factory(settings)
    llm_ready_when_engine_loads: list[bool] = []

    def gated_engine() -> Any:
        llm_ready_when_engine_loads.append(all(model.ready for model in LoadingLLM.built))
        engine.pass_through()
        return build()

    with TestClient(create_app(settings, engine_factory=gated_engine)) as client:  # returns before any model loads
        status, body = _health(client)
        assert status == 503 and body["status"] == "starting", body
        assert {"engine", "local_llm"} <= set(body["loading"])  # and "expander" while it reads its word lists
        services = client.app.state.services  # type: ignore[attr-defined]
        _, key = make_user(services.storage, "early")
        accepted = client.post("/api/v1/generations", headers=auth(key), json={"intent": "a red cat"})
        assert accepted.status_code == 202 and accepted.json()["status"] == "queued", accepted.text
        record = services.storage.generations.get_for_worker(accepted.json()["id"])
        assert record.expander_strategy == "rules"  # the LLM declined while loading; nothing waited for it

        llm.open()
        wait_until(lambda: _health(client), lambda health: health[1]["loading"] == ["engine"])
        engine.wait_reached()  # the engine loads after the LLM, never beside it
        assert llm_ready_when_engine_loads == [True]
        engine.open()
        status, body = wait_until(lambda: _health(client), lambda health: health[0] == 200)
        assert body["status"] == "ok" and body["loading"] == []
        done = wait_done(client, key, accepted.json()["id"])
        assert done["status"] == "succeeded", done["error"]
        after = client.post("/api/v1/generations", headers=auth(key), json={"intent": "a red cat"})
        assert services.storage.generations.get_for_worker(after.json()["id"]).expander_strategy == "local_llm"


def test_an_engine_that_cannot_load_leaves_the_server_up_and_degraded(
    tmp_path: Path, tiny_model: Path
) -> None:
    def broken() -> Any:
        raise OSError("no model here")

    with TestClient(create_app(tiny_settings(tmp_path / "data", tiny_model), engine_factory=broken)) as client:
        status, body = wait_until(lambda: _health(client), lambda health: health[1]["status"] != "starting")
        assert status == 200 and body["status"] == "degraded" and body["worker"] is False


class BrokenLLM(LoadingLLM):
    """An LLM whose model cannot load: it keeps declining, and is not reported as loading for ever."""

    def start_loading(self) -> None:
        pass

    def load(self) -> None:
        raise OSError("no weights here")


def test_an_llm_that_cannot_load_is_not_waited_for(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(BrokenLLM, "built", [], raising=False)
    monkeypatch.setattr(prompt_service, "LocalLLMExpander", BrokenLLM)
    settings = tiny_settings(tmp_path / "data", tiny_model, prompts={"strategies": ["local_llm", "rules"]})
    with TestClient(create_app(settings)) as client:
        status, body = wait_until(lambda: _health(client), lambda health: health[1]["status"] != "starting")
        assert status == 200 and body["status"] == "ok" and body["loading"] == []
