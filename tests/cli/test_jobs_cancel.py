"""`imageloop jobs cancel ID` on a real SQLite database: any user's job, by an operator."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

import imageloop.cli.commands  # noqa: F401  (registers every command on `app`)
from imageloop.cli import app
from imageloop.config import Settings
from imageloop.errors import NotFoundError
from imageloop.storage import JobStatus, NewGeneration, Storage, WorkerId


def test_an_operator_cancels_any_users_job(tmp_path: Path) -> None:
    env = {"IMAGELOOP_DATA_DIR": str(tmp_path)}
    storage = Storage.open(Settings(data_dir=tmp_path))
    try:
        ada, _ = storage.users.create_user("ada")
        running = storage.generations.create(ada.id, NewGeneration(intent="a running fox"))
        storage.generations.claim(WorkerId("w1"))
        queued = storage.generations.create(ada.id, NewGeneration(intent="a queued fox"))
        runner = CliRunner()
        result = runner.invoke(app, ["jobs", "cancel", queued.id], env=env)
        assert result.exit_code == 0 and f"{queued.id}: cancelled" in result.output, result.output
        assert storage.generations.get(ada.id, queued.id).status is JobStatus.CANCELLED
        result = runner.invoke(app, ["jobs", "cancel", running.id], env=env)
        assert result.exit_code == 0 and "running" in result.output, result.output
        assert storage.generations.get(ada.id, running.id).cancel_requested
        missing = runner.invoke(app, ["jobs", "cancel", "no-such-job"], env=env)
        assert isinstance(missing.exception, NotFoundError)
    finally:
        storage.close()
