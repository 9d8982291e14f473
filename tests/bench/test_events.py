from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

import imageloop.cli.commands  # noqa: F401  (registers every command on `app`)
from imageloop.bench.events import prepare_database, repository_ingest_rate, synthesise
from imageloop.cli import app
from imageloop.flywheel.export import export_datasets


def test_synthetic_record_exports_every_kind(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'e.db'}"
    db_engine = prepare_database(url)
    counts = synthesise(db_engine, 2_000, users=40)
    assert counts.actions >= 2_000 and counts.images == 2 * counts.generations
    sft, dpo, recipes = export_datasets(["sft", "dpo", "recipes"], db_engine, tmp_path / "out")
    assert sft.rows > 0 and dpo.rows > 0 and recipes.rows > 0
    assert sft.chains < counts.generations  # opted-out users (1 in 20) are skipped, chains group generations
    db_engine.dispose()
    assert repository_ingest_rate(url, 20) > 0


def test_cli_writes_json_and_table(tmp_path: Path) -> None:
    out = tmp_path / "events.json"
    result = CliRunner().invoke(
        app, ["bench", "events", "--events", "300", "--out", str(out), "--ingest", "5", "--api-ingest", "8",
              "--no-plot"],
        terminal_width=200,
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["events"] >= 300 and {e["kind"] for e in data["exports"]} == {"sft", "dpo", "recipes"}
    assert data["export_seconds"] < data["target_export_seconds"]
    assert set(data["api_ingest_actions_per_second"]) == {"1", "8"}
    assert "OK" in result.output and "OVER" not in result.output
