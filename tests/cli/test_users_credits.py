"""`imageloop users tier` and `imageloop users credits` on a real SQLite database."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

import imageloop.cli.commands  # noqa: F401  (registers every command on `app`)
from imageloop.cli import app
from imageloop.config import Settings
from imageloop.errors import InvalidRequestError, UnknownNameError
from imageloop.storage import LedgerKind, Storage


def test_tier_and_credits(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"IMAGELOOP_DATA_DIR": str(tmp_path)}
    assert runner.invoke(app, ["users", "create", "ada"], env=env).exit_code == 0
    tier = runner.invoke(app, ["users", "tier", "ada", "pro"], env=env)
    assert tier.exit_code == 0, tier.output
    unknown = runner.invoke(app, ["users", "tier", "ada", "gold"], env=env)
    assert isinstance(unknown.exception, UnknownNameError) and "pro" in unknown.exception.message
    granted = runner.invoke(app, ["users", "credits", "ada", "+25", "--reason", "welcome"], env=env,
                            terminal_width=200)
    assert granted.exit_code == 0, granted.output
    assert "ada: 25 credits (pro tier)" in granted.output and "welcome" in granted.output
    taken = runner.invoke(app, ["users", "credits", "ada", "-5"], env=env, terminal_width=200)
    assert taken.exit_code == 0, taken.output
    assert "ada: 20 credits" in taken.output and "-5" in taken.output
    too_much = runner.invoke(app, ["users", "credits", "ada", "-50"], env=env)
    assert isinstance(too_much.exception, InvalidRequestError) and "negative" in too_much.exception.message
    shown = runner.invoke(app, ["users", "credits", "ada"], env=env)
    assert "ada: 20 credits" in shown.output
    listed = runner.invoke(app, ["users", "list"], env=env, terminal_width=200)
    assert "20" in listed.output
    storage = Storage.open(Settings(data_dir=tmp_path))
    try:
        user = storage.users.get_by_name("ada")
        assert (user.tier, user.credits) == ("pro", 20)
        assert [(e.kind, e.amount) for e in storage.credits.history(user.id)] == [
            (LedgerKind.GRANT, -5), (LedgerKind.GRANT, 25)]
    finally:
        storage.close()


def test_an_administrator_is_created_in_the_unlimited_tier(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"IMAGELOOP_DATA_DIR": str(tmp_path)}
    created = runner.invoke(app, ["users", "create", "root", "--admin"], env=env)
    assert created.exit_code == 0 and "admin tier" in created.output
    assert "free tier" in runner.invoke(app, ["users", "create", "bo"], env=env).output
    storage = Storage.open(Settings(data_dir=tmp_path))
    try:
        assert [(u.name, u.tier) for u in storage.users.list_users()] == [("bo", "free"), ("root", "admin")]
    finally:
        storage.close()
