"""The record as chains, for dataset exports: every chain with its generations, images and actions, from ONE snapshot.

A chain's rows come from three ordered streams (generations, images, actions) merged by chain id. All three are
read on one connection inside one transaction — ``REPEATABLE READ`` on PostgreSQL, a read transaction on SQLite
(WAL: it sees the database as of its first read) — so a user who toggles the training opt-out, or a row written,
while an export runs cannot make the streams disagree. Rows created after ``until`` are left out as well, so an
export covers exactly ``[since, until)`` however long it runs. Users who opted out of training, and deleted users,
are filtered out in the queries: their rows never leave the database.

The rows are read as plain driver tuples (no SQLAlchemy ``Row`` or type processing per value: the streams are
millions of rows) in batches, from a server-side cursor on PostgreSQL, and grouped by chain id with
:func:`itertools.groupby`. A large record is read by a child process that hands the grouped rows over a pipe, so
the database's and the driver's work runs beside the export on another core: SQLite's driver gives up the GIL
for every row it steps, so a reading *thread* and a busy export thread mostly take turns. A small record (or one
in memory) is read by a background thread a few batches ahead, which costs no process start.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import marshal
import multiprocessing
import pickle
import queue
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from operator import itemgetter
from typing import Any, NamedTuple, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.selectable import Join

from imageloop.errors import StorageError
from imageloop.storage.models import Generation, Image, User, UserAction
from imageloop.storage.records import ActionType, JobStatus, utcnow

__all__ = ["ActionRow", "Chain", "GenerationRow", "ImageRow", "count_chains", "read_chains"]

AnyQuery = sa.Select[*tuple[Any, ...]]
AnySelect = TypeVar("AnySelect", bound=AnyQuery)
STREAM_BATCH = 20_000  # rows fetched at a time from each stream
CHAIN_BATCH = 256  # chains handed to the consumer at a time
PREFETCH_BATCHES = 4
PROCESS_CHAIN_BATCH = 2_000  # chains sent over the pipe at a time by a reading process
# Below this many generations a reading thread is used: the export takes about as long as starting a process.
PROCESS_MIN_GENERATIONS = 20_000
READER_EXIT_SECONDS = 10.0


# Named tuples, not dataclasses: an export builds one per row of the record, straight from the driver's tuple.
class GenerationRow(NamedTuple):
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


class ImageRow(NamedTuple):
    id: str
    generation_id: str
    index: int  # type: ignore[assignment]  # the image's place in its generation; shadows tuple.index, unused here
    blob_key: str


class ActionRow(NamedTuple):
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
    db_engine: Engine,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    images: bool = True,
    process: bool | None = None,
) -> Iterator[Chain]:
    """Every eligible chain created in ``[since, until)`` (``until`` defaults to now) with its generations, actions
    and (unless ``images`` is False) images, in chain-id order, all read from one snapshot.

    ``process``: read in a child process (True) or a thread (False); by default a process when the record holds
    ``PROCESS_MIN_GENERATIONS`` or more and a child can reach the database. Closing the iterator stops the reader.
    """
    until = until or utcnow()
    if process is None:
        process = _worth_a_process(db_engine)
    if process:
        url = db_engine.url.render_as_string(hide_password=False)
        return _from_process(url, since, until, images)
    return _prefetch(_assembled(_raw_chains(db_engine, since, until, images)))


def _queries(
    since: datetime | None, until: datetime, images: bool
) -> tuple[AnyQuery, AnyQuery | None, AnyQuery]:
    # Each stream starts with the chain id it is grouped by; the rest of a row is the fields of its *Row type.
    generations = _eligible(sa.select(
        Generation.chain_id, Generation.id, Generation.parent_id, Generation.status, Generation.intent,
        Generation.intent_language, Generation.final_prompt, Generation.recipe, Generation.style,
        Generation.expander_version,
    ), since, until).order_by(Generation.chain_id, Generation.created_at, Generation.id)
    image_rows = _eligible(
        sa.select(Generation.chain_id, Image.id, Image.generation_id, Image.index, Image.blob_key)
        .join(Generation, Generation.id == Image.generation_id), since, until,
    ).where(Image.created_at < until).order_by(Generation.chain_id) if images else None
    # The database orders the actions within each chain by time (SQLite per chain, see _GenerationsFirst;
    # PostgreSQL in its one sort after a hash join): a longer sort key, not a Python sort.
    actions = _eligible(
        sa.select(Generation.chain_id, UserAction.generation_id, UserAction.image_id, UserAction.type)
        .select_from(_GenerationsFirst(Generation.__table__, UserAction.__table__,
                                       Generation.id == UserAction.generation_id)), since, until,
    ).where(UserAction.created_at < until).order_by(Generation.chain_id, UserAction.created_at, UserAction.id)
    return generations, image_rows, actions


class _GenerationsFirst(Join):
    """An inner join that SQLite must run with its left side (generations) as the outer loop.

    Left to itself, SQLite's planner reads the actions by their creation-time index (the time bound) and sorts
    all of them by chain before the first row comes out: seconds on a large record, while the export waits.
    Walking generations in chain order and each one's actions by their generation index yields rows at once and
    sorts only within a chain. ``CROSS JOIN`` is SQLite's documented way to fix the order; other databases get a
    plain ``JOIN`` (PostgreSQL plans its own sort)."""

    inherit_cache = True


@compiles(_GenerationsFirst, "sqlite")
def _generations_first_on_sqlite(join: _GenerationsFirst, compiler: SQLCompiler, **kw: Any) -> str:
    # The left side is one table, so the first " JOIN " of the plain rendering is this join's own.
    left, _, rest = str(compiler.visit_join(join, **kw)).partition(" JOIN ")  # type: ignore[no-untyped-call]
    return f"{left} CROSS JOIN {rest}"


# Enum columns are stored as their values; the driver hands back the strings.
_STATUS = {member.value: member for member in JobStatus}
_ACTION = {member.value: member for member in ActionType}


RawRows = list[tuple[Any, ...]]
RawChain = tuple[str, RawRows, RawRows, RawRows]  # a chain id and the driver rows of its three streams


def _raw_chains(
    db_engine: Engine, since: datetime | None, until: datetime, images: bool
) -> Generator[RawChain, None, None]:
    generation_query, image_query, action_query = _queries(since, until, images)
    connection = db_engine.connect()
    if connection.dialect.name == "postgresql":
        # Every statement of the transaction sees the snapshot its first statement took.
        connection = connection.execution_options(isolation_level="REPEATABLE READ")
    try:
        with connection.begin():
            streams = _Streams(connection)
            generation_rows = streams.open(generation_query)
            # groupby hands out (chain id, rows of that chain) without a Python step per row.
            image_groups = itertools.groupby(streams.open(image_query) if image_query is not None else iter(()),
                                             _CHAIN_ID)
            action_groups = itertools.groupby(streams.open(action_query), _CHAIN_ID)
            # Every chain of the image and action streams is also in the generation stream (same snapshot, same
            # filters), in the same order, so the next group of each is either this chain's or a later one's.
            image_group = next(image_groups, None)
            action_group = next(action_groups, None)
            for chain_id, rows in itertools.groupby(generation_rows, _CHAIN_ID):
                chain_images: RawRows = []
                chain_actions: RawRows = []
                if image_group is not None and image_group[0] == chain_id:
                    chain_images = list(image_group[1])
                    image_group = next(image_groups, None)
                if action_group is not None and action_group[0] == chain_id:
                    chain_actions = list(action_group[1])
                    action_group = next(action_groups, None)
                yield chain_id, list(rows), chain_images, chain_actions
    finally:
        connection.close()


def _assemble(raw: RawChain) -> Chain:
    chain_id, generations, images, actions = raw
    status, action_type, new = _STATUS, _ACTION, tuple.__new__
    return Chain(
        chain_id,
        [new(GenerationRow, (row[1], chain_id, row[2], status[row[3]], *row[4:])) for row in generations],
        [new(ImageRow, row[1:]) for row in images],
        [new(ActionRow, (row[1], row[2], action_type[row[3]])) for row in actions],
    )


def _assembled(raws: Generator[RawChain, None, None]) -> Generator[Chain, None, None]:
    try:
        for raw in raws:
            yield _assemble(raw)
    finally:
        raws.close()  # ends the read transaction at once, also when the consumer stops early


def _worth_a_process(db_engine: Engine) -> bool:
    url = db_engine.url
    if multiprocessing.current_process().daemon:  # a daemonic process may not start children
        return False
    if url.get_backend_name() == "sqlite" and (url.database in (None, "", ":memory:") or "mode=memory" in str(url)):
        return False  # another process would see another database
    with db_engine.connect() as connection:
        generations = connection.execute(sa.select(sa.func.count()).select_from(Generation)).scalar_one()
    return int(generations) >= PROCESS_MIN_GENERATIONS


def _from_process(
    url: str, since: datetime | None, until: datetime, images: bool
) -> Generator[Chain, None, None]:
    """The chains, read by a child process (:func:`_serve`) and received over a pipe."""
    context = multiprocessing.get_context("spawn")  # no fork: this process may be running threads
    receiver, sender = context.Pipe(duplex=False)
    reader = context.Process(target=_serve, args=(url, since, until, images, sender), name="imageloop-export-read")
    reader.start()
    sender.close()  # the child holds its own end: the pipe ends when it exits
    try:
        while True:
            try:
                kind, payload = marshal.loads(receiver.recv_bytes())
            except EOFError:
                raise StorageError(f"the record reader stopped (exit code {reader.exitcode})") from None
            if kind == "end":
                return
            if kind == "error":
                raise pickle.loads(payload)
            for raw in payload:
                yield _assemble(raw)
    finally:
        receiver.close()  # a reader still sending stops at its next message
        reader.join(READER_EXIT_SECONDS)
        if reader.is_alive():  # stuck in the database: its read transaction is only a reader's
            reader.terminate()
            reader.join()


def _serve(url: str, since: datetime | None, until: datetime, images: bool, sender: Any) -> None:
    """In the child: read the chains and send them, ``PROCESS_CHAIN_BATCH`` at a time, then ``end`` (or the error).

    Batches are marshalled (driver rows are only strings, numbers and None): several times faster than pickle,
    and only this interpreter's own child writes them.
    """
    from imageloop.storage.db import create_db_engine

    gc.disable()  # this process only holds acyclic rows on their way out (see export_datasets)
    db_engine = create_db_engine(url)
    try:
        batch: list[RawChain] = []
        for raw in _raw_chains(db_engine, since, until, images):
            batch.append(raw)
            if len(batch) >= PROCESS_CHAIN_BATCH:
                sender.send_bytes(marshal.dumps(("chains", batch)))
                batch = []
        sender.send_bytes(marshal.dumps(("chains", batch)))
        sender.send_bytes(marshal.dumps(("end", None)))
    except BrokenPipeError:
        return  # the consumer stopped reading
    except Exception as exc:  # handed to the consumer, which re-raises it
        try:
            error = pickle.dumps(exc)
        except Exception:  # one that cannot be pickled is passed on as text
            error = pickle.dumps(StorageError(f"reading the record failed: {exc!r}"))
        with contextlib.suppress(BrokenPipeError):
            sender.send_bytes(marshal.dumps(("error", error)))
    finally:
        sender.close()
        db_engine.dispose()


_CHAIN_ID = itemgetter(0)


class _Streams:
    """Row streams of one transaction, read as driver tuples ``STREAM_BATCH`` at a time.

    SQLite's cursor steps through the result as it is fetched. On PostgreSQL each stream is a server-side cursor
    (``DECLARE``), planned for reading every row rather than the first few, and fetched in batches.
    """

    def __init__(self, connection: sa.Connection) -> None:
        self._connection = connection
        self._postgres = connection.dialect.name == "postgresql"
        self._opened = 0
        if self._postgres:
            connection.exec_driver_sql("SET LOCAL cursor_tuple_fraction = 1.0")

    def open(self, query: AnyQuery) -> Iterator[tuple[Any, ...]]:
        if not self._postgres:
            return self._fetch(self._connection.execute(query).cursor)
        compiled = query.compile(dialect=self._connection.dialect)
        name = f"imageloop_chains_{self._opened}"
        self._opened += 1
        # The parameters are the time bounds, which the driver adapts itself (no SQLAlchemy bind processing).
        self._connection.exec_driver_sql(f"DECLARE {name} NO SCROLL CURSOR FOR {compiled}", compiled.params)
        return self._fetch_declared(name)

    @staticmethod
    def _fetch(cursor: Any) -> Iterator[tuple[Any, ...]]:
        # Batches flattened without a Python step per row.
        return itertools.chain.from_iterable(iter(lambda: cursor.fetchmany(STREAM_BATCH), []))

    def _fetch_declared(self, name: str) -> Iterator[tuple[Any, ...]]:
        fetch = f"FETCH FORWARD {STREAM_BATCH} FROM {name}"
        batches = iter(lambda: self._connection.exec_driver_sql(fetch).cursor.fetchall(), [])
        return itertools.chain.from_iterable(batches)


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
