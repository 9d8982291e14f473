from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from imageloop.storage.db import create_db_engine, current_revision, downgrade_schema, upgrade_schema
from imageloop.storage.models import Base

NOW = datetime(2026, 1, 1, tzinfo=UTC).replace(tzinfo=None)


def _head() -> str | None:
    """The newest revision in the migrations folder (each new revision moves it)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from imageloop.storage.db import MIGRATIONS_DIR

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(config).get_current_head()


def test_upgrade_on_empty_database_creates_the_schema_of_the_models(database_url: str) -> None:
    upgrade_schema(database_url)
    upgrade_schema(database_url)  # a second start is a no-op
    db_engine = create_db_engine(database_url)
    try:
        assert current_revision(db_engine) == _head()
        with db_engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata)
        assert diff == []
    finally:
        db_engine.dispose()


def test_downgrade_then_upgrade_keeps_rows(database_url: str) -> None:
    upgrade_schema(database_url)
    db_engine = create_db_engine(database_url)
    try:
        with db_engine.begin() as connection:
            connection.execute(sa.text(
                "INSERT INTO users (id, name, is_admin, training_opt_out, credits, tier, created_at) "
                "VALUES ('u1', 'ada', false, false, 7, 'pro', :now)"), {"now": NOW})
            connection.execute(sa.text(
                "INSERT INTO api_keys (id, user_id, key_hash, prefix, created_at) "
                "VALUES ('k1', 'u1', 'h', 'il_x', :now)"), {"now": NOW})
            connection.execute(sa.text(
                "INSERT INTO generations (id, user_id, intent, params, chain_id, status, cancel_requested, "
                "enqueued_at, attempts, progress_step, progress_total, timings, created_at) VALUES "
                "('g1', 'u1', 'a cat', '{}', 'g1', 'queued', false, :now, 0, 0, 0, '{}', :now)"), {"now": NOW})
        downgrade_schema(database_url, "0001")
        assert current_revision(db_engine) == "0001"
        with db_engine.connect() as connection:
            assert connection.execute(sa.text("SELECT name FROM users")).scalar_one() == "ada"
            # The table rebuild of a batch migration must not cascade deletes into child tables.
            assert connection.execute(sa.text("SELECT count(*) FROM api_keys")).scalar_one() == 1
            assert connection.execute(sa.text("SELECT count(*) FROM generations")).scalar_one() == 1
        upgrade_schema(database_url)
        with db_engine.connect() as connection:
            row = connection.execute(sa.text("SELECT name, credits, tier FROM users")).one()
            assert tuple(row) == ("ada", 0, "free")  # columns come back with their defaults
            assert connection.execute(sa.text("SELECT count(*) FROM api_keys")).scalar_one() == 1
            assert connection.execute(sa.text("SELECT intent FROM generations")).scalar_one() == "a cat"
    finally:
        db_engine.dispose()


def test_sqlite_engine_uses_wal_foreign_keys_and_busy_timeout(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db_engine = create_db_engine(f"sqlite:///{tmp_path / 'sub' / 'x.db'}")
    try:
        with db_engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    finally:
        db_engine.dispose()


def test_bad_database_url_is_a_config_error() -> None:
    import pytest

    from imageloop.errors import ConfigError

    with pytest.raises(ConfigError, match="database_url"):
        create_db_engine("mysql://x/y")
    with pytest.raises(ConfigError, match="database_url"):
        create_db_engine("not a url")
