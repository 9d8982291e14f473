"""Database engines, sessions and schema upgrades.

SQLite (the embedded default) runs in WAL mode with foreign keys on and a busy timeout, so a server and a worker
process can share one file. PostgreSQL (scaled mode) uses psycopg 3. ``upgrade_schema`` runs Alembic to the newest
revision; the server calls it at start.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from imageloop.errors import ConfigError, NotFoundError, StorageError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Execution option that makes a SQLite transaction take the write lock at BEGIN (see ``write_session``).
_BEGIN_IMMEDIATE = "imageloop_begin_immediate"

SessionFactory = sessionmaker[Session]
RowT = TypeVar("RowT")


def normalise_url(url: str | URL) -> URL:
    """Parse ``url``; plain ``postgresql://`` means psycopg 3 (the driver we ship). Raise ConfigError if invalid."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"database_url: cannot parse {str(url)!r}: {exc}") from exc
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in {"sqlite", "postgresql"}:
        backend = parsed.get_backend_name()
        raise ConfigError(f"database_url: unsupported database {backend!r} (allowed: sqlite, postgresql)")
    return parsed


def create_db_engine(url: str | URL, *, echo: bool = False) -> Engine:
    """A database engine for ``url`` configured for concurrent use by several processes.

    SQLite: the file's folder is created (0700 when new), the file is readable by its owner only (0600, as are the
    WAL and shared-memory files SQLite makes beside it with the same mode), WAL journal, ``foreign_keys=ON``, a 30 s
    busy timeout, and transactions that Python's sqlite3 module would otherwise start late are begun explicitly.
    PostgreSQL: psycopg 3 with pre-ping so a restarted database does not break the pool.
    """
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, echo=echo)
    return sa.create_engine(parsed, echo=echo, pool_pre_ping=True, future=True)


def _private_file(path: Path) -> None:
    """Create ``path`` (empty) and its folder for the owner alone; tighten an existing file and its companions."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    for companion in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if companion.exists():
            companion.chmod(0o600)


def _sqlite_engine(url: URL, *, echo: bool) -> Engine:
    database = url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        _private_file(Path(database).expanduser())
    db_engine = sa.create_engine(
        url, echo=echo, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    )

    @event.listens_for(db_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module; "begin" below issues BEGIN itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(db_engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        # A write transaction takes the lock up front: upgrading a read lock later can fail with SQLITE_BUSY
        # without waiting for the busy timeout.
        immediate = connection.get_execution_options().get(_BEGIN_IMMEDIATE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return db_engine


def session_factory(db_engine: Engine) -> SessionFactory:
    """A session factory bound to ``db_engine``; sessions keep loaded values after commit."""
    return sessionmaker(bind=db_engine, expire_on_commit=False, future=True)


@contextmanager
def write_session(sessions: SessionFactory) -> Iterator[Session]:
    """A session in one write transaction: committed on success, rolled back on error.

    Database failures surface as StorageError; Imageloop errors raised inside pass through unchanged.
    """
    with sessions() as session:
        try:
            session.connection(execution_options={_BEGIN_IMMEDIATE: True})
            yield session
            session.commit()
        except SQLAlchemyError as exc:
            session.rollback()
            raise StorageError(f"database write failed: {exc.__class__.__name__}: {exc}") from exc
        except BaseException:
            session.rollback()
            raise


@contextmanager
def read_session(sessions: SessionFactory) -> Iterator[Session]:
    """A session for reads; database failures surface as StorageError."""
    with sessions() as session:
        try:
            yield session
        except SQLAlchemyError as exc:
            raise StorageError(f"database read failed: {exc.__class__.__name__}: {exc}") from exc
        finally:
            session.rollback()


def get_row(session: Session, model: type[RowT], key: str | None, missing: str, *, user_id: str | None = None,
            for_update: bool = False) -> RowT:
    """The ``model`` row whose primary key is ``key`` (locked for update if asked); NotFoundError(``missing``)
    when there is none (or no key), or when ``user_id`` is given and the row is another user's (it reads as
    missing)."""
    row = None if key is None else session.get(model, key, with_for_update=True if for_update else None)
    if row is None or (user_id is not None and getattr(row, "user_id", None) != user_id):
        raise NotFoundError(missing)
    return row


def _alembic_config(db_engine: Engine) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Passed as an object, not a URL string: passwords with '%' would break Alembic's config interpolation.
    config.attributes["db_engine"] = db_engine
    return config


def upgrade_schema(url: str | URL | Engine, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision`` (default: the newest). Safe to call on every start."""
    _run_migrations("upgrade", url, revision)


def downgrade_schema(url: str | URL | Engine, revision: str) -> None:
    """Take the database at ``url`` back to ``revision`` (for operators undoing an upgrade)."""
    _run_migrations("downgrade", url, revision)


def _run_migrations(direction: Literal["upgrade", "downgrade"], url: str | URL | Engine, revision: str) -> None:
    from alembic import command

    db_engine = url if isinstance(url, Engine) else create_db_engine(url)
    try:
        step = command.upgrade if direction == "upgrade" else command.downgrade
        step(_alembic_config(db_engine), revision)
    except SQLAlchemyError as exc:
        raise StorageError(f"schema {direction} failed: {exc}") from exc
    finally:
        if not isinstance(url, Engine):
            db_engine.dispose()


def current_revision(db_engine: Engine) -> str | None:
    """The Alembic revision the database is at, or None for an empty database."""
    from alembic.runtime.migration import MigrationContext

    with db_engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
