"""One app on the tiny model for the web page's API tests (tests make their own users)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from imageloop.server import create_app
from imageloop.server.services import Services
from tests.server.kit import save_tiny_model, tiny_settings

# The storage fixtures (a fresh database per test, SQLite and PostgreSQL) serve the query tests.
from tests.storage.conftest import clock, database_url, storage  # noqa: F401


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-model") / "tiny")


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[TestClient]:
    settings = tiny_settings(tmp_path_factory.mktemp("ui-data"), tiny_model)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def services(client: TestClient) -> Services:
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    return services
