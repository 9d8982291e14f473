from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

import imageloop.cli.commands  # noqa: F401  (registers every command on `app`)
from imageloop.cli import app
from imageloop.config import Settings
from imageloop.errors import ConflictError
from imageloop.storage import Storage


def test_users_create_list_password_keys(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"IMAGELOOP_DATA_DIR": str(tmp_path)}
    created = runner.invoke(app, ["users", "create", "ada", "--admin"], env=env)
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[-1]
    storage = Storage.open(Settings(data_dir=tmp_path))
    try:
        assert storage.users.authenticate(key).is_admin
    finally:
        storage.close()
    again = runner.invoke(app, ["users", "create", "ada"], env=env)
    assert isinstance(again.exception, ConflictError)

    listed = runner.invoke(app, ["users", "list"], env=env, terminal_width=200)
    assert "ada" in listed.output and key not in listed.output
    password = runner.invoke(app, ["users", "set-password", "ada"], input="long enough\nlong enough\n", env=env)
    assert password.exit_code == 0, password.output
    keys = runner.invoke(app, ["users", "keys", "ada", "--new"], env=env, terminal_width=200)
    assert keys.exit_code == 0 and keys.stdout.strip().splitlines()[-1].startswith("il_")
    assert key[:10] in keys.output and key not in keys.output  # only prefixes are ever shown again
    storage = Storage.open(Settings(data_dir=tmp_path))
    try:
        assert storage.users.verify_password("ada", "long enough").name == "ada"
        assert len(storage.users.list_api_keys(storage.users.get_by_name("ada").id)) == 2
    finally:
        storage.close()
