"""`imageloop serve` fails before listening, with an error naming what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from imageloop.cli import _register, app
from imageloop.errors import ModelLoadError, StorageError


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IMAGELOOP_DATA_DIR", str(tmp_path))
    _register()
    return tmp_path


def test_serve_with_a_missing_model_names_it(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["serve", "--model", str(tmp_path / "nope"), "--port", "1"])
    assert isinstance(result.exception, ModelLoadError) and "nope" in str(result.exception)
    assert (tmp_path / "imageloop.db").exists()  # the schema was upgraded first


def test_scaled_serve_without_redis_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGELOOP_JOBS__MODE", "scaled")
    monkeypatch.setenv("IMAGELOOP_JOBS__REDIS_URL", "redis://127.0.0.1:1/0")
    result = CliRunner().invoke(app, ["serve"])
    assert isinstance(result.exception, StorageError) and "jobs.redis_url" in str(result.exception)
