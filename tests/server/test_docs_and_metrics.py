"""/docs loads nothing from another origin (its Swagger UI files are served here; ReDoc is off), and /metrics can be
kept behind a bearer token."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from imageloop.server.app import create_app
from tests.server.kit import tiny_settings


@pytest.fixture(scope="module")
def app_overrides() -> dict[str, Any]:
    return {"server": {"metrics_token": "scrape-me"}}


def test_the_docs_page_loads_only_local_assets(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    sources = re.findall(r"""(?:src|href)=["']([^"']+)""", page.text)
    assert sources and all(src.startswith("/") and not src.startswith("//") for src in sources), sources
    assert "cdn" not in page.text.lower()
    for src in sources:
        assert client.get(src).status_code == 200, src
    assert client.get("/redoc").status_code == 404
    assert client.get("/openapi.json").json()["info"]["title"] == "Imageloop"


def test_metrics_need_the_token_when_one_is_set(client: TestClient) -> None:
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    scraped = client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
    assert scraped.status_code == 200 and "imageloop_queue_depth" in scraped.text


def test_metrics_are_open_without_a_token(tmp_path: Path, tiny_model: Path) -> None:
    with TestClient(create_app(tiny_settings(tmp_path / "data", tiny_model))) as client:
        assert client.get("/metrics").status_code == 200
