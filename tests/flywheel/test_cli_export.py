from __future__ import annotations

from pathlib import Path

import datasets
from typer.testing import CliRunner

import imageloop.cli.commands  # noqa: F401  (registers every command on `app`)
from imageloop.cli import app
from imageloop.config import Settings
from imageloop.errors import InvalidRequestError
from imageloop.storage import LocalBlobStore, Storage
from tests.flywheel.record import build_record


def test_export_commands_write_loadable_datasets(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    storage = Storage.open(settings, blobs=LocalBlobStore(settings.blobs_dir))
    try:
        build_record(storage)
    finally:
        storage.close()
    runner = CliRunner()
    env = {"IMAGELOOP_DATA_DIR": str(settings.data_dir)}
    out = tmp_path / "out"
    for kind, rows in (("sft", 2), ("dpo", 2), ("pairs", 6), ("recipes", 3)):
        result = runner.invoke(app, ["export", kind, "--out", str(out), "--since", "2000-01-01"], env=env)
        assert result.exit_code == 0, result.output
        assert f"{rows} rows" in result.output
        loaded = datasets.load_dataset("parquet", data_files=str(out / kind / "data.parquet"), split="train")
        assert len(loaded) == rows
        assert (out / kind / "README.md").exists()
    future = runner.invoke(app, ["export", "sft", "--out", str(out), "--since", "2999-01-01"], env=env)
    assert "0 rows" in future.output
    bad = runner.invoke(app, ["export", "sft", "--out", str(out), "--since", "yesterday"], env=env)
    assert isinstance(bad.exception, InvalidRequestError) and bad.exception.field == "since"
