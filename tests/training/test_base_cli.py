"""`imageloop train base` and `imageloop train judge` from the command line (tiny sizes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imageloop.cli import _register, app
from imageloop.errors import InvalidRequestError
from tests.server.kit import HANG_GUARD_SECONDS, wait_until
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


@pytest.fixture(scope="module")
def shared_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("signals") / "data"  # rendered by the first run, reused by the next


@pytest.mark.slow
@needs_emoji_font
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_background_run_stops_on_a_signal_and_keeps_its_steps(tmp_path: Path, shared_data: Path,
                                                                 signum: int) -> None:
    # As `imageloop train base ... &` from a shell script: SIGINT starts out ignored.
    ckpt = tmp_path / "ckpt"
    args = [sys.executable, "-m", "imageloop", "train", "base", "--data", str(shared_data), "--out",
            str(tmp_path / "out"), "--checkpoints", str(ckpt), "--dataset-size", "64", "--vae-steps", "2",
            "--batch-size", "4", "--minutes", "10", "--tiny"]
    env = {**os.environ, "IMAGELOOP_DATA_DIR": str(tmp_path / "home")}
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert proc.stderr is not None
    seen = ""
    while "diffusion:" not in seen:  # the diffusion loop's progress bar has started (drawn with \r, no newline)
        text = proc.stderr.read(1)
        assert text, f"training ended before the diffusion stage: {seen}"
        seen += text
    # Steps have been taken once the loop logs its loss (every 50 steps); no checkpoint is due for minutes.
    loss_log = ckpt / "loss.csv"
    wait_until(lambda: loss_log.is_file() or proc.poll() is not None)
    assert proc.poll() is None, "training ended before it logged a step"
    proc.send_signal(signum)
    rest = proc.communicate(timeout=HANG_GUARD_SECONDS)[1]
    assert proc.returncode == 130, seen + rest
    assert "--resume" in rest
    logged = [int(float(line.split(",")[0])) for line in loss_log.read_text().splitlines()[1:]]
    [saved] = sorted(ckpt.glob("diffusion-*.pt"))  # only the checkpoint written on the way out
    assert int(saved.stem.split("-")[1]) >= max(logged) >= 50  # the steps since the start were saved
