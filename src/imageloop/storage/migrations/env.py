"""Alembic environment: runs Imageloop's revisions against the database engine ``imageloop.storage.db`` hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Engine

from imageloop.storage.db import create_db_engine
from imageloop.storage.models import Base

config = context.config
target_metadata = Base.metadata


def _engine() -> Engine:
    db_engine = config.attributes.get("db_engine")
    if isinstance(db_engine, Engine):
        return db_engine
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database engine or sqlalchemy.url given to the Alembic environment")
    return create_db_engine(url)


def run_migrations_online() -> None:
    db_engine = _engine()
    with db_engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # Batch migrations rebuild tables (copy, drop, rename); with foreign keys on, the DROP would cascade
            # deletes into child tables. The pragma only works outside a transaction, hence the raw connection.
            connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
        try:
            context.configure(
                connection=connection, target_metadata=target_metadata, render_as_batch=sqlite, compare_type=True
            )
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
        finally:
            if sqlite:
                connection.connection.driver_connection.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]


if context.is_offline_mode():
    raise RuntimeError("Imageloop migrations run online only (imageloop.storage.db.upgrade_schema)")
run_migrations_online()
