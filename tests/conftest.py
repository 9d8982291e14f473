"""Settings for the whole test run, and the fixtures tests of several packages share: the tiny model on disk and
one running app on it per test module (a folder's conftest may override ``app_overrides``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import torch
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

    from imageloop.server.services import Services

# No hub, ever: tests build their own tiny models.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# A busy machine must not turn slowness into failures: no per-example deadline (200 ms by default) and no
# too-slow health check for any property test, not only for those that say so.
hypothesis_settings.register_profile("imageloop", deadline=None, suppress_health_check=[HealthCheck.too_slow])
hypothesis_settings.load_profile("imageloop")

# Tiny models run fastest on one thread; more threads only add contention on a 2-core machine.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.server.kit import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny-model") / "tiny")


@pytest.fixture(scope="module")
def app_overrides() -> dict[str, Any]:
    """Settings the module's app is made with beyond ``tiny_settings``."""
    return {}


@pytest.fixture(scope="module")
def client(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, app_overrides: dict[str, Any]
) -> Iterator[TestClient]:
    """One running app (embedded worker on the tiny model) shared by a test module; tests use their own users."""
    from fastapi.testclient import TestClient

    from imageloop.server import create_app
    from tests.server.kit import tiny_settings, wait_until

    settings = tiny_settings(tmp_path_factory.mktemp("app-data"), tiny_model, **app_overrides)
    with TestClient(create_app(settings)) as test_client:
        # The app loads its engine in the background: wait, so no test builds a model while it loads (diffusers'
        # loading puts every module made meanwhile, in any thread, on the meta device).
        wait_until(lambda: test_client.app.state.services.loading() == [])  # type: ignore[attr-defined]
        yield test_client


@pytest.fixture(scope="module")
def services(client: TestClient) -> Services:
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    return services
