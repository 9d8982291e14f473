"""Bulk writes and whole-record reads for the benchmarks and the flywheel simulation (``imageloop bench``).

Rows are column dicts inserted in one transaction per call, without the repositories' per-row checks: synthetic
records of a million actions load in minutes. Served code never uses this module; it goes through the repositories.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from imageloop.storage.models import Generation, Image, User, UserAction
from imageloop.storage.records import ActionType, JobStatus

__all__ = ["any_generation", "bulk_insert", "session_outcomes", "tune_for_bulk_load"]

Rows = Iterable[dict[str, Any]]


def tune_for_bulk_load(db_engine: Engine) -> None:
    """Give SQLite a large page cache and no fsync for a synthetic load only (random-key B-tree inserts thrash the
    default 2 MB cache, so the load slows down as the file grows). Whatever is measured afterwards opens its own
    database engine with the product's settings. Nothing to do on PostgreSQL."""
    if db_engine.dialect.name != "sqlite":
        return
    db_engine.dispose()

    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA cache_size=-1048576")  # 1 GiB, in KiB
        cursor.execute("PRAGMA synchronous=OFF")
        cursor.close()

    sa.event.listen(db_engine, "connect", _on_connect)


def bulk_insert(
    db_engine: Engine, *, users: Rows = (), generations: Rows = (), images: Rows = (), actions: Rows = ()
) -> None:
    """Insert the rows (column dicts, every row of a table naming the same columns) in one transaction, parents
    first. On PostgreSQL the rows go through ``COPY``, several times faster than batched ``INSERT``s."""
    with db_engine.begin() as connection:
        for model, rows in ((User, users), (Generation, generations), (Image, images), (UserAction, actions)):
            batch = list(rows)
            if not batch:
                continue
            if connection.dialect.name == "postgresql":
                _copy(connection, model.metadata.tables[model.__tablename__], batch)
            else:
                connection.execute(sa.insert(model), batch)


def _copy(connection: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    # Values pass through each column type's bind processor (enums to their names, JSON to psycopg's Json), so
    # COPY stores what an INSERT of the same dicts would; COPY applies no Python-side defaults, so none may be left.
    columns = [table.c[name] for name in rows[0]]
    if defaulted := [column.name for column in table.c if column.default is not None and column.name not in rows[0]]:
        raise ValueError(f"rows for {table.name} must name the columns with Python-side defaults: {defaulted}")
    dialect = connection.dialect
    processors = [column.type.dialect_impl(dialect).bind_processor(dialect) for column in columns]
    quote = connection.dialect.identifier_preparer.quote
    statement = f"COPY {quote(table.name)} ({', '.join(quote(column.name) for column in columns)}) FROM STDIN"
    names = [column.key for column in columns]
    cursor: Any = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row([value if process is None else process(value)
                            for process, value in zip(processors, (row[name] for name in names), strict=True)])


def any_generation(db_engine: Engine) -> tuple[str, str]:
    """(user id, generation id) of some generation in the record (NoResultFound on an empty one)."""
    with db_engine.connect() as connection:
        user_id, generation_id = connection.execute(sa.select(Generation.user_id, Generation.id).limit(1)).one()
    return str(user_id), str(generation_id)


def session_outcomes(
    db_engine: Engine, session_prefix: str
) -> tuple[list[tuple[str, JobStatus]], list[tuple[str, str | None, ActionType]]]:
    """For the sessions whose id starts with ``session_prefix``: each generation's (session id, status), and each
    action's (session id, image id, type), oldest first; both read in one transaction."""
    with db_engine.connect() as connection:
        generations = connection.execute(
            sa.select(Generation.session_id, Generation.status)
            .where(Generation.session_id.startswith(session_prefix, autoescape=True))
        ).all()
        actions = connection.execute(
            sa.select(Generation.session_id, UserAction.image_id, UserAction.type)
            .join(Generation, UserAction.generation_id == Generation.id)
            .where(Generation.session_id.startswith(session_prefix, autoescape=True))
            .order_by(UserAction.created_at, UserAction.id)
        ).all()
    return ([(str(s), JobStatus(status)) for s, status in generations],
            [(str(s), image_id, ActionType(kind)) for s, image_id, kind in actions])
