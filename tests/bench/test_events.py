from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

import imageloop.cli.commands  # noqa: F401  (registers every command on `app`)
from imageloop.bench.event_images import SyntheticImageStore
from imageloop.bench.events import EXPORTED_KINDS, prepare_database, repository_ingest_rate, synthesise
from imageloop.cli import app
from imageloop.flywheel.export import export_datasets
from tests.storage.conftest import database_url  # noqa: F401  (SQLite, and PostgreSQL when configured)
from tests.storage.dbs import POSTGRES_ENV, fresh_database


def test_synthetic_record_exports_every_kind(database_url: str, tmp_path: Path) -> None:  # noqa: F811
    db_engine = prepare_database(database_url)
    counts = synthesise(db_engine, 2_000, users=40)
    assert counts.actions >= 2_000 and counts.images == 2 * counts.generations
    results = export_datasets(EXPORTED_KINDS, db_engine, tmp_path / "out", blobs=SyntheticImageStore(pool_size=2))
    assert [r.kind for r in results] == ["sft", "dpo", "pairs", "recipes"]
    assert all(r.rows > 0 for r in results) and not any(r.skipped for r in results)
    assert results[0].chains < counts.generations  # opted-out users (1 in 20) are skipped, chains group generations
    db_engine.dispose()
    assert repository_ingest_rate(database_url, 20) > 0


def _run_cli(out: Path, *args: str) -> tuple[dict[str, object], str]:
    result = CliRunner().invoke(
        app, ["bench", "events", "--events", "300", "--out", str(out), "--no-plot", *args], terminal_width=200
    )
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text()), result.output


def test_cli_writes_json_and_table(tmp_path: Path) -> None:
    data, output = _run_cli(tmp_path / "events.json", "--ingest", "5", "--api-ingest", "8")
    assert data["events"] >= 300 and data["database"] == "sqlite" and data["database_version"]
    exports = data["exports"]
    assert isinstance(exports, list) and [e["kind"] for e in exports] == list(EXPORTED_KINDS)
    assert all(e["rows"] > 0 and e["peak_rss_mb"] > 0 for e in exports)
    together = data["export_all"]
    assert isinstance(together, dict) and together["kind"] == "all"
    assert together["rows_by_kind"] == {e["kind"]: e["rows"] for e in exports}
    assert data["export_seconds"] == together["seconds"]
    assert data["export_peak_rss_mb"] == together["peak_rss_mb"] + together["reader_peak_rss_mb"]  # type: ignore[operator]
    assert data["target_export_seconds"] == 20.0 and data["target_peak_rss_mb"] == 2048.0
    assert set(data["api_ingest_actions_per_second"]) == {"1", "8"}  # type: ignore[arg-type]
    assert "pairs" in output and "OK" in output and "OVER" not in output


@pytest.mark.skipif(not os.environ.get(POSTGRES_ENV), reason=f"needs {POSTGRES_ENV} (run .ci/services.sh)")
def test_cli_runs_on_postgresql(tmp_path: Path) -> None:
    with fresh_database("postgresql", tmp_path) as url:
        data, output = _run_cli(tmp_path / "events.json", "--database-url", url, "--ingest", "5", "--api-ingest",
                                "0")
    assert data["database"] == "postgresql" and data["events"] >= 300
    assert data["export_all"]["rows"] == sum(e["rows"] for e in data["exports"])  # type: ignore[index]
    assert "on postgresql" in output
