"""The vector index: kept generations with the embeddings of their intent and final prompt (``prompt_memory``).

One interface, :class:`VectorIndex`, three ways to search it, chosen by :func:`open_vector_index`:

* :class:`SqliteVecIndex` — SQLite with the ``sqlite-vec`` extension: cosine distance computed in SQL
  (``vec_distance_cosine`` over float32 blobs);
* :class:`PgVectorIndex` — PostgreSQL with the ``pgvector`` extension installed: ``embedding::vector <=> query``;
* :class:`NumpyVectorIndex` — any database (SQLite whose Python cannot load extensions, PostgreSQL without
  pgvector): the candidate vectors are read and scored with NumPy.

Embeddings are stored as float32 blobs in SQLite and ``real[]`` arrays in PostgreSQL (see :class:`EmbeddingType`).
Vectors from different embedders are never compared: every row names its ``embedder`` and searches filter on it.
Global searches (user None) skip users who opted out of training and deleted users.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from imageloop.errors import StorageError
from imageloop.storage.db import SessionFactory, read_session, session_factory, write_session
from imageloop.storage.models import EmbeddingType, PromptMemoryRow, User, Vector
from imageloop.storage.records import new_id, utcnow

__all__ = [
    "EmbeddingType",
    "MemoryEntry",
    "Neighbour",
    "NewMemory",
    "NumpyVectorIndex",
    "PgVectorIndex",
    "PromptMemoryRow",
    "SqliteVecIndex",
    "VectorField",
    "VectorIndex",
    "open_vector_index",
]

log = logging.getLogger(__name__)
VectorField = Literal["intent", "prompt"]


@dataclass(frozen=True, slots=True)
class NewMemory:
    """A kept generation to remember, with its embeddings (``intent_embedding`` None when it had no intent)."""

    user_id: str
    generation_id: str
    final_prompt: str
    embedder: str
    prompt_embedding: Vector
    kept_at: datetime
    intent: str | None = None
    intent_language: str | None = None
    intent_embedding: Vector | None = None
    negative_prompt: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    recipe: str | None = None
    style: str | None = None


@dataclass(frozen=True, slots=True)
class MemoryEntry:
    """A remembered kept generation (without its vectors)."""

    id: str
    user_id: str
    generation_id: str
    intent: str | None
    intent_language: str | None
    final_prompt: str
    negative_prompt: str | None
    params: dict[str, Any]
    recipe: str | None
    style: str | None
    embedder: str
    kept_at: datetime


@dataclass(frozen=True, slots=True)
class Neighbour:
    """A search hit: the entry and its cosine similarity to the query (1 = same direction)."""

    entry: MemoryEntry
    similarity: float


_ENTRY_COLUMNS = (
    PromptMemoryRow.id, PromptMemoryRow.user_id, PromptMemoryRow.generation_id, PromptMemoryRow.intent,
    PromptMemoryRow.intent_language, PromptMemoryRow.final_prompt, PromptMemoryRow.negative_prompt,
    PromptMemoryRow.params, PromptMemoryRow.recipe, PromptMemoryRow.style, PromptMemoryRow.embedder,
    PromptMemoryRow.kept_at,
)


def _entry(row: sa.Row[Any]) -> MemoryEntry:
    return MemoryEntry(*row[: len(_ENTRY_COLUMNS)])


def _column(vector_field: VectorField) -> sa.orm.InstrumentedAttribute[Vector | None]:
    return PromptMemoryRow.intent_embedding if vector_field == "intent" else PromptMemoryRow.prompt_embedding


def _unit(vector: Vector) -> Vector:
    vector = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


class VectorIndex(abc.ABC):
    """Add, remove, list and search remembered kept generations. Methods run in their own transactions."""

    backend: str = "abstract"

    def __init__(self, db_engine: Engine, sessions: SessionFactory | None = None) -> None:
        self.db_engine = db_engine
        self.sessions = sessions or session_factory(db_engine)

    def add(self, memory: NewMemory) -> bool:
        """Remember a kept generation; False (and nothing changes) when it is already remembered."""
        row = PromptMemoryRow(
            id=new_id(), user_id=memory.user_id, generation_id=memory.generation_id, intent=memory.intent,
            intent_language=memory.intent_language, final_prompt=memory.final_prompt,
            negative_prompt=memory.negative_prompt, params=dict(memory.params), recipe=memory.recipe,
            style=memory.style, embedder=memory.embedder,
            intent_embedding=None if memory.intent_embedding is None else _unit(memory.intent_embedding),
            prompt_embedding=_unit(memory.prompt_embedding), kept_at=memory.kept_at, created_at=utcnow(),
        )
        try:
            with write_session(self.sessions) as session:
                exists = session.scalar(
                    sa.select(PromptMemoryRow.id).where(PromptMemoryRow.generation_id == memory.generation_id)
                )
                if exists is not None:
                    return False
                session.add(row)
        except StorageError as exc:
            if isinstance(exc.__cause__, IntegrityError):  # a concurrent add of the same generation won
                return False
            raise
        return True

    def remove(self, generation_ids: Sequence[str]) -> int:
        """Forget these generations (e.g. an image was un-liked); returns how many rows went."""
        if not generation_ids:
            return 0
        with write_session(self.sessions) as session:
            result = session.execute(
                sa.delete(PromptMemoryRow).where(PromptMemoryRow.generation_id.in_(list(generation_ids)))
            )
            return int(getattr(result, "rowcount", 0) or 0)

    def remembered(self, user_id: str | None = None) -> set[str]:
        """The generation ids remembered (for one user, or everyone)."""
        query = sa.select(PromptMemoryRow.generation_id)
        if user_id is not None:
            query = query.where(PromptMemoryRow.user_id == user_id)
        with read_session(self.sessions) as session:
            return set(session.scalars(query))

    def entries(self, user_id: str, *, limit: int = 100) -> list[MemoryEntry]:
        """A user's remembered generations, most recently kept first."""
        query = (
            sa.select(*_ENTRY_COLUMNS).where(PromptMemoryRow.user_id == user_id)
            .order_by(PromptMemoryRow.kept_at.desc(), PromptMemoryRow.id.desc()).limit(limit)
        )
        with read_session(self.sessions) as session:
            return [_entry(row) for row in session.execute(query)]

    def vectors(self, user_id: str, *, embedder: str, vector_field: VectorField = "prompt", limit: int = 200) -> Vector:
        """A user's most recent vectors of ``vector_field`` as an (n, d) array (n = 0 when there are none)."""
        column = _column(vector_field)
        query = (
            sa.select(column).where(
                PromptMemoryRow.user_id == user_id, PromptMemoryRow.embedder == embedder, column.is_not(None)
            ).order_by(PromptMemoryRow.kept_at.desc()).limit(limit)
        )
        with read_session(self.sessions) as session:
            rows = [np.asarray(v, dtype=np.float32) for v in session.scalars(query)]
        return np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)

    def search(
        self,
        query: Vector,
        *,
        embedder: str,
        vector_field: VectorField = "intent",
        user_id: str | None = None,
        k: int = 5,
    ) -> list[Neighbour]:
        """The ``k`` entries most similar to ``query`` (cosine), best first; one user's or everyone's."""
        if k <= 0:
            return []
        try:
            return self._search(_unit(query), embedder=embedder, vector_field=vector_field, user_id=user_id, k=k)
        except SQLAlchemyError as exc:
            raise StorageError(f"vector search failed: {exc.__class__.__name__}: {exc}") from exc

    def _filtered(self, query: Any, embedder: str, vector_field: VectorField, user_id: str | None) -> Any:
        column = _column(vector_field)
        query = query.where(PromptMemoryRow.embedder == embedder, column.is_not(None))
        if user_id is not None:
            return query.where(PromptMemoryRow.user_id == user_id)
        return query.join(User, User.id == PromptMemoryRow.user_id).where(
            User.training_opt_out.is_(False), User.deleted_at.is_(None)
        )

    @abc.abstractmethod
    def _search(
        self, query: Vector, *, embedder: str, vector_field: VectorField, user_id: str | None, k: int
    ) -> list[Neighbour]: ...


class NumpyVectorIndex(VectorIndex):
    """Reads the matching vectors and ranks them with NumPy: works on every database."""

    backend = "numpy"

    def _search(
        self, query: Vector, *, embedder: str, vector_field: VectorField, user_id: str | None, k: int
    ) -> list[Neighbour]:
        column = _column(vector_field)
        select = self._filtered(sa.select(PromptMemoryRow.id, column), embedder, vector_field, user_id)
        with self.db_engine.connect() as connection:
            rows = connection.execute(select).all()
        if not rows:
            return []
        ids = [row[0] for row in rows]
        matrix = np.stack([np.asarray(row[1], dtype=np.float32) for row in rows])
        if matrix.shape[1] != query.shape[0]:
            raise StorageError(
                f"vector search: the query has {query.shape[0]} dims, {embedder} rows have {matrix.shape[1]}"
            )
        scores = matrix @ query
        top = np.argsort(-scores, kind="stable")[:k]
        return self._neighbours([(ids[i], float(scores[i])) for i in top])

    def _neighbours(self, ranked: list[tuple[str, float]]) -> list[Neighbour]:
        with self.db_engine.connect() as connection:
            rows = connection.execute(
                sa.select(*_ENTRY_COLUMNS).where(PromptMemoryRow.id.in_([i for i, _ in ranked]))
            ).all()
        entries = {row[0]: _entry(row) for row in rows}
        return [Neighbour(entries[i], score) for i, score in ranked if i in entries]


class SqliteVecIndex(VectorIndex):
    """SQLite with sqlite-vec: the distance is computed inside the query."""

    backend = "sqlite-vec"

    def _search(
        self, query: Vector, *, embedder: str, vector_field: VectorField, user_id: str | None, k: int
    ) -> list[Neighbour]:
        column = _column(vector_field)
        blob = query.astype("<f4").tobytes()
        distance = sa.func.vec_distance_cosine(column, sa.literal(blob, sa.LargeBinary())).label("distance")
        select = self._filtered(sa.select(*_ENTRY_COLUMNS, distance), embedder, vector_field, user_id)
        with self.db_engine.connect() as connection:
            if not load_sqlite_vec(connection):
                raise StorageError("sqlite-vec could not be loaded into this connection")
            rows = connection.execute(select.order_by(distance, PromptMemoryRow.id).limit(k)).all()
        return [Neighbour(_entry(row), 1.0 - float(row[-1])) for row in rows]


class PgVectorIndex(NumpyVectorIndex):
    """PostgreSQL with the pgvector extension: ``real[]`` cast to ``vector`` and ordered by ``<=>``."""

    backend = "pgvector"

    def _search(
        self, query: Vector, *, embedder: str, vector_field: VectorField, user_id: str | None, k: int
    ) -> list[Neighbour]:
        column = _column(vector_field)
        literal = "[" + ",".join(f"{float(x):.8g}" for x in query) + "]"
        # pgvector casts real[] to vector; the column name comes from our own model, never from input.
        distance = sa.text(f"(prompt_memory.{column.key}::vector <=> CAST(:q AS vector)) AS distance")
        select = self._filtered(sa.select(PromptMemoryRow.id), embedder, vector_field, user_id)
        select = select.add_columns(distance).order_by(sa.text("distance")).limit(k)
        with self.db_engine.connect() as connection:
            rows = connection.execute(select, {"q": literal}).all()
        return self._neighbours([(row[0], 1.0 - float(row[-1])) for row in rows])


def load_sqlite_vec(connection: sa.Connection) -> bool:
    """Make sure sqlite-vec is loaded in this SQLite connection; False when the driver cannot load extensions."""
    try:
        connection.exec_driver_sql("SELECT vec_version()")
        return True
    except SQLAlchemyError:
        connection.rollback()
    try:
        import sqlite_vec

        raw: Any = connection.connection.driver_connection
        raw.enable_load_extension(True)
        try:
            sqlite_vec.load(raw)
        finally:
            raw.enable_load_extension(False)
        connection.exec_driver_sql("SELECT vec_version()")
        return True
    except (ImportError, AttributeError, SQLAlchemyError, OSError) as exc:
        # e.g. a Python whose sqlite3 was built without extension loading (pyenv's default).
        log.debug("sqlite-vec not available: %s", exc)
        return False
    except Exception as exc:  # the sqlite3 module's own OperationalError when loading fails
        log.debug("sqlite-vec failed to load: %s", exc)
        return False


def _pgvector_installed(db_engine: Engine) -> bool:
    with db_engine.connect() as connection:
        return bool(connection.exec_driver_sql("SELECT 1 FROM pg_extension WHERE extname = 'vector'").scalar())


def open_vector_index(db_engine: Engine, sessions: SessionFactory | None = None) -> VectorIndex:
    """The best index this database supports: sqlite-vec or pgvector when they load, NumPy otherwise."""
    if db_engine.dialect.name == "sqlite":
        with db_engine.connect() as connection:
            if load_sqlite_vec(connection):
                # New pool connections need the extension too.
                if not sa.event.contains(db_engine, "connect", _load_on_connect):
                    sa.event.listen(db_engine, "connect", _load_on_connect)
                return SqliteVecIndex(db_engine, sessions)
        return NumpyVectorIndex(db_engine, sessions)
    if db_engine.dialect.name == "postgresql" and _pgvector_installed(db_engine):
        return PgVectorIndex(db_engine, sessions)
    return NumpyVectorIndex(db_engine, sessions)


def _load_on_connect(dbapi_connection: Any, _record: Any) -> None:
    try:
        import sqlite_vec

        dbapi_connection.enable_load_extension(True)
        sqlite_vec.load(dbapi_connection)
        dbapi_connection.enable_load_extension(False)
    except Exception as exc:  # searches re-check and report; a failed load here must not break the connection
        log.debug("sqlite-vec not loaded on connect: %s", exc)
