"""`imageloop train cycle` and `imageloop models list | show | promote | rollback` against a real data dir."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

import imageloop.cli.commands  # noqa: F401  (registers every command on `app`)
from imageloop.cli import app
from imageloop.config import Settings
from imageloop.errors import ConflictError, UnknownNameError
from imageloop.storage import Storage
from imageloop.training.registry import ModelKind, Registry


def test_train_cycle_runs_and_reports(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train", "cycle"], env={"IMAGELOOP_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 0, result.output
    assert "succeeded" in result.stdout and "expander: skipped, 0 kept intents for training" in result.stdout
    again = CliRunner().invoke(app, ["train", "cycle", "--json"], env={"IMAGELOOP_DATA_DIR": str(tmp_path)})
    record = json.loads(again.stdout)
    # The first cycle trained nothing (no data), so the second's window still starts at the beginning.
    assert record["run"]["status"] == "succeeded" and record["stages"]["export"]["since"] is None


def test_models_commands(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    storage = Storage.open(settings)
    folder = tmp_path / "reward"
    folder.mkdir()
    (folder / "reward.safetensors").write_bytes(b"x")
    registry = Registry(storage.sessions, settings)
    gate = {"candidate_accuracy": 0.81, "current_accuracy": 0.5, "gain_low": 0.2, "gain_high": 0.4, "pairs": 40}
    v1, v2 = (registry.register(ModelKind.REWARD, folder, name="reward-cnn", data_hash="a" * 64,
                                metrics={"gate": gate}) for _ in range(2))
    storage.close()
    runner, env = CliRunner(), {"IMAGELOOP_DATA_DIR": str(tmp_path)}

    listed = runner.invoke(app, ["models", "list"], env=env, terminal_width=200)
    assert listed.exit_code == 0 and v1.id in listed.output and "0.81 vs 0.50" in listed.output
    assert runner.invoke(app, ["models", "promote", v1.id], env=env).stdout.strip() == "reward v1 promoted"
    assert runner.invoke(app, ["models", "promote", v2.id], env=env).exit_code == 0
    rolled = runner.invoke(app, ["models", "rollback", v2.id], env=env)
    assert rolled.stdout.strip() == "reward v2 rolled back; serving now: v1"
    shown = json.loads(runner.invoke(app, ["models", "show", v2.id], env=env).stdout)
    assert shown["status"] == "rolled_back" and shown["note"] == "rolled back from the CLI"
    assert isinstance(runner.invoke(app, ["models", "rollback", v2.id], env=env).exception, ConflictError)
    assert isinstance(runner.invoke(app, ["models", "list", "--kind", "x"], env=env).exception, UnknownNameError)
    as_json = json.loads(runner.invoke(app, ["models", "list", "--json", "--kind", "reward"], env=env).stdout)
    assert [m["version"] for m in as_json] == [2, 1]
