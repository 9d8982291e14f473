"""`imageloop train base` and `imageloop train judge` from the command line (tiny sizes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imageloop.cli import _register, app
from imageloop.errors import InvalidRequestError
from tests.training.base_helpers import needs_emoji_font


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IMAGELOOP_DATA_DIR", str(tmp_path / "home"))
    _register()
    return tmp_path


@pytest.mark.slow
@needs_emoji_font
def test_train_base_builds_data_trains_resumes_and_exports(tmp_path: Path) -> None:
    args = ["train", "base", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"),
            "--checkpoints", str(tmp_path / "ckpt"), "--dataset-size", "64", "--vae-steps", "2",
            "--batch-size", "4", "--minutes", "0.4", "--tiny"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert json.loads((tmp_path / "data" / "manifest.json").read_text())["size"] == 64
    assert (tmp_path / "out" / "model_index.json").is_file()
    step = json.loads((tmp_path / "out" / "training.json").read_text())["step"]
    again = CliRunner().invoke(app, args)  # checkpoints exist: refuses without --resume
    assert isinstance(again.exception, InvalidRequestError) and "--resume" in str(again.exception)
    resumed = CliRunner().invoke(app, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    resumed_step = json.loads((tmp_path / "out" / "training.json").read_text())["step"]
    assert resumed_step > step

    # The checkpoints are gone: a new folder is seeded from the export and training carries on from its step.
    from_export = [*args[:6], "--checkpoints", str(tmp_path / "ckpt2"), *args[8:], "--init-from",
                   str(tmp_path / "out")]
    from_export[from_export.index("--out") + 1] = str(tmp_path / "out2")
    seeded = CliRunner().invoke(app, from_export)
    assert seeded.exit_code == 0, seeded.output
    assert f"step {resumed_step}" in seeded.output
    assert json.loads((tmp_path / "out2" / "training.json").read_text())["step"] > resumed_step
    refused = CliRunner().invoke(app, from_export)  # the folder now holds checkpoints
    assert isinstance(refused.exception, InvalidRequestError) and "--init-from" in str(refused.exception)

    judge = CliRunner().invoke(app, ["train", "judge", "--data", str(tmp_path / "data"), "--out",
                                     str(tmp_path / "judge"), "--minutes", "0.05", "--validation-images", "16"])
    assert judge.exit_code == 0, judge.output
    assert "composition" in judge.output and (tmp_path / "judge" / "judge.safetensors").is_file()
