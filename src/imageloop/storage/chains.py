"""The record as chains, for dataset exports: every chain with its generations, images and actions, from ONE snapshot.

A chain's rows come from three ordered streams (generations, images, actions) merged by chain id. All three are
read on one connection inside one transaction — ``REPEATABLE READ`` on PostgreSQL, a read transaction on SQLite
(WAL: it sees the database as of its first read) — so a user who toggles the training opt-out, or a row written,
while an export runs cannot make the streams disagree. Rows created after ``until`` are left out as well, so an
export covers exactly ``[since, until)`` however long it runs. Users who opted out of training, and deleted users,
are filtered out in the queries: their rows never leave the database.

A background thread reads and merges (the drivers release the GIL while the database works), handing finished
chains over a few batches ahead, so fetching overlaps with building examples on two or more cores.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from imageloop.storage.models import Generation, Image, User, UserAction
from imageloop.storage.records import ActionType, JobStatus, utcnow

__all__ = ["ActionRow", "Chain", "GenerationRow", "ImageRow", "count_chains", "read_chains"]

AnyRow = sa.Row[*tuple[Any, ...]]
AnyQuery = sa.Select[*tuple[Any, ...]]
AnySelect = TypeVar("AnySelect", bound=AnyQuery)
STREAM_BATCH = 5_000
CHAIN_BATCH = 256  # chains handed to the consumer at a time
PREFETCH_BATCHES = 4


@dataclass(frozen=True, slots=True)
class GenerationRow:
    id: str
    chain_id: str
    parent_id: str | None
    status: JobStatus
    intent: str | None
    intent_language: str | None
    final_prompt: str | None
    recipe: str | None
    style: str | None
    expander_version: str | None


@dataclass(frozen=True, slots=True)
class ImageRow:
    id: str
    generation_id: str
    index: int
    blob_key: str


@dataclass(frozen=True, slots=True)
class ActionRow:
    generation_id: str
    image_id: str | None
    type: ActionType


@dataclass(slots=True)
class Chain:
    """All rows of one chain; generations in creation order, actions oldest first."""

    chain_id: str
    generations: list[GenerationRow] = field(default_factory=list)
    images: list[ImageRow] = field(default_factory=list)
    actions: list[ActionRow] = field(default_factory=list)


def _eligible(query: AnySelect, since: datetime | None, until: datetime) -> AnySelect:
    query = query.join(User, User.id == Generation.user_id).where(
        User.training_opt_out.is_(False), User.deleted_at.is_(None), Generation.created_at < until
    )
    return query.where(Generation.created_at >= since) if since is not None else query


def count_chains(db_engine: Engine, *, since: datetime | None = None, until: datetime | None = None) -> int:
    """How many chains an export of ``[since, until)`` (until: now) will walk (for progress bars)."""
    query = _eligible(sa.select(sa.func.count(sa.distinct(Generation.chain_id))).select_from(Generation), since,
                      until or utcnow())
    with db_engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


def read_chains(
    db_engine: Engine, *, since: datetime | None = None, until: datetime | None = None, images: bool = True
) -> Iterator[Chain]:
    """Every eligible chain created in ``[since, until)`` (``until`` defaults to now) with its generations, actions
    and (unless ``images`` is False) images, in chain-id order, all read from one snapshot."""
    return _prefetch(_merged(db_engine, since, until or utcnow(), images))


def _queries(
    since: datetime | None, until: datetime, images: bool
) -> tuple[AnyQuery, AnyQuery | None, AnyQuery]:
    generations = _eligible(sa.select(
        Generation.chain_id, Generation.id, Generation.parent_id, Generation.status, Generation.intent,
        Generation.intent_language, Generation.final_prompt, Generation.recipe, Generation.style,
        Generation.expander_version,
    ), since, until).order_by(Generation.chain_id, Generation.created_at, Generation.id)
    image_rows = _eligible(
        sa.select(Generation.chain_id, Image.id, Image.generation_id, Image.index, Image.blob_key)
        .join(Generation, Generation.id == Image.generation_id), since, until,
    ).where(Image.created_at < until).order_by(Generation.chain_id) if images else None
    # Ordered by chain only (an index walk); each chain's few actions are put in time order in Python, which is
    # much cheaper than sorting every action in the database. The raw timestamp is enough to compare.
    actions = _eligible(
        sa.select(Generation.chain_id, UserAction.generation_id, UserAction.image_id, UserAction.type,
                  sa.type_coerce(UserAction.created_at, sa.String), UserAction.id)
        .join(Generation, Generation.id == UserAction.generation_id), since, until,
    ).where(UserAction.created_at < until).order_by(Generation.chain_id)
    return generations, image_rows, actions


def _merged(
    db_engine: Engine, since: datetime | None, until: datetime, images: bool
) -> Generator[Chain, None, None]:
    generations, image_query, action_query = _queries(since, until, images)
    connection = db_engine.connect()
    if connection.dialect.name == "postgresql":
        # Every statement of the transaction sees the snapshot its first statement took.
        connection = connection.execution_options(isolation_level="REPEATABLE READ")
    streaming = connection.execution_options(stream_results=True, yield_per=STREAM_BATCH)
    try:
        with connection.begin():
            generation_rows = iter(streaming.execute(generations))
            image_rows = _Peekable(iter(streaming.execute(image_query)) if image_query is not None else iter(()))
            action_rows = _Peekable(iter(streaming.execute(action_query)))
            chain: Chain | None = None
            for row in generation_rows:
                if chain is None or row[0] != chain.chain_id:
                    if chain is not None:
                        yield _complete(chain, image_rows, action_rows)
                    chain = Chain(chain_id=row[0])
                chain.generations.append(GenerationRow(row[1], row[0], *row[2:]))
            if chain is not None:
                yield _complete(chain, image_rows, action_rows)
    finally:
        connection.close()


class _Peekable:
    """An ordered row stream from which one chain's rows are taken at a time."""

    def __init__(self, rows: Iterator[AnyRow]) -> None:
        self._rows = rows
        self._next: AnyRow | None = next(rows, None)

    def take(self, chain_id: str) -> Iterator[AnyRow]:
        # Every chain in this stream also appears in the generation stream (same snapshot, same filters), in the
        # same order, so rows of the chain asked for are either next or absent.
        while self._next is not None and self._next[0] == chain_id:
            yield self._next
            self._next = next(self._rows, None)


def _complete(chain: Chain, images: _Peekable, actions: _Peekable) -> Chain:
    chain.images = [ImageRow(row[1], row[2], row[3], row[4]) for row in images.take(chain.chain_id)]
    rows = sorted(actions.take(chain.chain_id), key=lambda row: (row[4], row[5]))
    chain.actions = [ActionRow(row[1], row[2], row[3]) for row in rows]
    return chain


_END = object()


def _prefetch(chains: Generator[Chain, None, None]) -> Iterator[Chain]:
    """``chains``, produced by a background thread a few batches ahead; closing this iterator stops the thread."""
    buffer: queue.Queue[object] = queue.Queue(maxsize=PREFETCH_BATCHES)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            batch: list[Chain] = []
            for chain in chains:
                batch.append(chain)
                if len(batch) >= CHAIN_BATCH:
                    if not put(batch):
                        return
                    batch = []
            if batch and not put(batch):
                return
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(exc)
            return
        finally:
            chains.close()
        put(_END)

    thread = threading.Thread(target=produce, name="imageloop-export-fetch", daemon=True)
    thread.start()
    try:
        while (item := buffer.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield from item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()
