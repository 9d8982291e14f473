"""Dataset export: stream the flywheel record out of the database, chain by chain, into Parquet + a dataset card.

Reads are streamed (three ordered cursors merged by chain id), examples come from the pure builders in
:mod:`imageloop.flywheel.datasets`, and rows are written in batches, so memory stays flat however large the record.
Users who opted out of training, and deleted users, are filtered out in the query itself: their rows never leave
the database. Each dataset lands in ``OUT/<kind>/data.parquet`` with ``OUT/<kind>/README.md`` beside it, ready for
``datasets.load_dataset("parquet", data_files=...)``.
"""

from __future__ import annotations

import io
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from imageloop.errors import InvalidRequestError, NotFoundError
from imageloop.flywheel.cards import dataset_card
from imageloop.flywheel.datasets import (
    ActionRow,
    Chain,
    ChainView,
    GenerationRow,
    ImageRow,
    RecipeTally,
    dpo_examples,
    pair_specs,
    sft_examples,
    view,
)
from imageloop.storage.blobs import BlobStore
from imageloop.storage.models import Generation, Image, User, UserAction

AnyRow = sa.Row[*tuple[Any, ...]]
AnySelect = TypeVar("AnySelect", bound=sa.Select[*tuple[Any, ...]])
ExportKind = Literal["sft", "dpo", "pairs", "recipes"]
EXPORT_KINDS: tuple[str, ...] = get_args(ExportKind)
STREAM_BATCH = 5_000
WRITE_BATCH = 10_000
PREFETCH_PARTITIONS = 2
PAIRS_WRITE_BATCH = 256  # rows carry two JPEGs each
JPEG_QUALITY = 95

SCHEMAS: dict[str, pa.Schema] = {
    "sft": pa.schema([("prompt", pa.string()), ("completion", pa.string()), ("language", pa.string()),
                      ("generation_id", pa.string())]),
    "dpo": pa.schema([("prompt", pa.string()), ("chosen", pa.string()), ("rejected", pa.string()),
                      ("chosen_generation_id", pa.string()), ("rejected_generation_id", pa.string())]),
    "pairs": pa.schema([("caption", pa.string()), ("jpg_0", pa.binary()), ("jpg_1", pa.binary()),
                        ("label_0", pa.float64()), ("label_1", pa.float64()), ("image_0_uid", pa.string()),
                        ("image_1_uid", pa.string()), ("source", pa.string())]),
    "recipes": pa.schema([("recipe", pa.string()), ("style", pa.string()), ("uses", pa.int64()),
                          ("kept", pa.int64()), ("keep_rate", pa.float64()), ("keep_rate_low", pa.float64()),
                          ("keep_rate_high", pa.float64())]),
}


@dataclass(frozen=True, slots=True)
class ExportResult:
    kind: str
    path: Path
    card: Path
    rows: int
    chains: int
    seconds: float
    skipped: int = 0  # pairs whose image bytes were missing from the blob store


def since_datetime(value: date | datetime | None) -> datetime | None:
    """``--since`` as an aware UTC datetime (a date means midnight UTC)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


def _eligible(query: AnySelect, since: datetime | None) -> AnySelect:
    query = query.join(User, User.id == Generation.user_id).where(
        User.training_opt_out.is_(False), User.deleted_at.is_(None)
    )
    return query.where(Generation.created_at >= since) if since is not None else query


def count_chains(db_engine: Engine, *, since: datetime | None = None) -> int:
    """How many chains an export will walk (for progress bars)."""
    query = _eligible(sa.select(sa.func.count(sa.distinct(Generation.chain_id))).select_from(Generation), since)
    with db_engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


_END = object()


def _stream(db_engine: Engine, query: sa.Select[*tuple[Any, ...]]) -> Iterator[AnyRow]:
    """The rows of ``query``, fetched by a background thread a few partitions ahead.

    The database drivers release the GIL while the database works, so on two or more cores fetching overlaps with
    building examples. Partitions, not single rows: fetching row by row costs more than building the examples.
    """
    buffer: queue.Queue[object] = queue.Queue(maxsize=PREFETCH_PARTITIONS)
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
            with db_engine.connect() as connection:
                result = connection.execution_options(stream_results=True, yield_per=STREAM_BATCH).execute(query)
                for partition in result.partitions():
                    if not put(partition):
                        return
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(exc)
            return
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


def iter_chains(db_engine: Engine, *, since: datetime | None = None, images: bool = True) -> Iterator[Chain]:
    """Every eligible chain with its generations, actions and (unless ``images`` is False) images, streamed in
    chain-id order."""
    generations = _stream(db_engine, _eligible(sa.select(
        Generation.chain_id, Generation.id, Generation.parent_id, Generation.status, Generation.intent,
        Generation.intent_language, Generation.final_prompt, Generation.recipe, Generation.style,
        Generation.expander_version,
    ), since).order_by(Generation.chain_id, Generation.created_at, Generation.id))
    image_stream = _stream(db_engine, _eligible(
        sa.select(Generation.chain_id, Image.id, Image.generation_id, Image.index, Image.blob_key)
        .join(Generation, Generation.id == Image.generation_id), since,
    ).order_by(Generation.chain_id)) if images else iter(())
    # Ordered by chain only (an index walk); each chain's few actions are put in time order in Python, which is
    # much cheaper than sorting every action in the database. The raw timestamp is enough to compare.
    actions = _stream(db_engine, _eligible(
        sa.select(Generation.chain_id, UserAction.generation_id, UserAction.image_id, UserAction.type,
                  sa.type_coerce(UserAction.created_at, sa.String), UserAction.id)
        .join(Generation, Generation.id == UserAction.generation_id), since,
    ).order_by(Generation.chain_id))
    image_rows = _Peekable(image_stream)
    action_rows = _Peekable(actions)
    chain: Chain | None = None
    for row in generations:
        if chain is None or row[0] != chain.chain_id:
            if chain is not None:
                yield _complete(chain, image_rows, action_rows)
            chain = Chain(chain_id=row[0])
        chain.generations.append(GenerationRow(row[1], row[0], *row[2:]))
    if chain is not None:
        yield _complete(chain, image_rows, action_rows)


class _Peekable:
    """An ordered row stream from which one chain's rows are taken at a time."""

    def __init__(self, rows: Iterator[AnyRow]) -> None:
        self._rows = rows
        self._next: AnyRow | None = next(rows, None)

    def take(self, chain_id: str) -> Iterator[AnyRow]:
        # Every chain in this stream also appears in the generation stream, in the same order, so rows of the
        # chain asked for are either next or absent.
        while self._next is not None and self._next[0] == chain_id:
            yield self._next
            self._next = next(self._rows, None)


def _complete(chain: Chain, images: _Peekable, actions: _Peekable) -> Chain:
    chain.images = [ImageRow(row[1], row[2], row[3], row[4]) for row in images.take(chain.chain_id)]
    rows = sorted(actions.take(chain.chain_id), key=lambda row: (row[4], row[5]))
    chain.actions = [ActionRow(row[1], row[2], row[3]) for row in rows]
    return chain


class _BatchWriter:
    """Writes row dicts to a Parquet file in batches."""

    def __init__(self, path: Path, schema: pa.Schema, batch: int) -> None:
        self._writer = pq.ParquetWriter(str(path), schema, compression="zstd")
        self._schema = schema
        self._batch = batch
        self._rows: list[dict[str, Any]] = []
        self.count = 0

    def add(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        if len(self._rows) >= self._batch:
            self.flush()

    def flush(self) -> None:
        if self._rows:
            self._writer.write_table(pa.Table.from_pylist(self._rows, schema=self._schema))
            self.count += len(self._rows)
            self._rows = []

    def close(self) -> None:
        self.flush()
        self._writer.close()


class _JpegCache:
    """JPEG bytes of stored images; a kept image is in many pairs, so recent conversions are cached."""

    def __init__(self, blobs: BlobStore) -> None:
        self._blobs = blobs
        self._cached = lru_cache(maxsize=512)(self._convert)

    def __call__(self, key: str) -> bytes:
        return self._cached(key)

    def _convert(self, key: str) -> bytes:
        from PIL import Image as PILImage

        with PILImage.open(io.BytesIO(self._blobs.get(key))) as image:
            out = io.BytesIO()
            image.convert("RGB").save(out, format="JPEG", quality=JPEG_QUALITY)
            return out.getvalue()


class _Dataset:
    """One dataset being written: turns chain views into rows of its Parquet file."""

    def __init__(self, kind: str, out_dir: Path, blobs: BlobStore | None) -> None:
        self.kind = kind
        self.folder = out_dir / kind
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "data.parquet"
        batch = PAIRS_WRITE_BATCH if kind == "pairs" else WRITE_BATCH
        self.writer = _BatchWriter(self.path, SCHEMAS[kind], batch)
        self.tally = RecipeTally()
        self.jpeg = _JpegCache(blobs) if blobs is not None else None
        self.skipped = 0

    def add(self, info: ChainView) -> None:
        if self.kind == "sft":
            for sft in sft_examples(info):
                self.writer.add(asdict(sft))
        elif self.kind == "dpo":
            for dpo in dpo_examples(info):
                self.writer.add(asdict(dpo))
        elif self.kind == "recipes":
            self.tally.add(info)
        elif self.jpeg is not None:
            for spec in pair_specs(info):
                try:
                    jpg_0, jpg_1 = self.jpeg(spec.image_0.blob_key), self.jpeg(spec.image_1.blob_key)
                except NotFoundError:
                    self.skipped += 1
                    continue
                self.writer.add({"caption": spec.caption, "jpg_0": jpg_0, "jpg_1": jpg_1, "label_0": spec.label_0,
                                 "label_1": spec.label_1, "image_0_uid": spec.image_0.id,
                                 "image_1_uid": spec.image_1.id, "source": spec.source})

    def finish(self, chains: int, since: datetime | None, seconds: float) -> ExportResult:
        for stat in self.tally.stats():
            self.writer.add(asdict(stat))
        self.writer.close()
        card = self.folder / "README.md"
        card.write_text(dataset_card(self.kind, SCHEMAS[self.kind], rows=self.writer.count, chains=chains, since=since))
        return ExportResult(self.kind, self.path, card, self.writer.count, chains, seconds, self.skipped)


def export_datasets(
    kinds: Sequence[str],
    db_engine: Engine,
    out_dir: Path,
    *,
    since: date | datetime | None = None,
    blobs: BlobStore | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[ExportResult]:
    """Export several datasets (``sft``, ``dpo``, ``pairs``, ``recipes``) in ONE pass over the record, each to
    ``out_dir/<kind>/`` (``data.parquet`` + ``README.md``).

    Only generations created at or after ``since`` are read. ``pairs`` needs ``blobs`` to read the images.
    ``progress`` is called with the number of chains done since its last call. Returns one result per kind (all
    with the same total ``seconds``).
    """
    for kind in kinds:
        if kind not in EXPORT_KINDS:
            raise InvalidRequestError("kind", f"unknown dataset {kind!r}", value=kind, allowed=", ".join(EXPORT_KINDS))
    if "pairs" in kinds and blobs is None:
        raise InvalidRequestError("blobs", "the pairs dataset needs the blob store to read images")
    start = time.perf_counter()
    cutoff = since_datetime(since)
    sinks = [_Dataset(kind, Path(out_dir), blobs) for kind in dict.fromkeys(kinds)]
    chains = pending = 0
    try:
        # Only image pairs need the image rows; the text datasets skip that (largest) table.
        for chain in iter_chains(db_engine, since=cutoff, images="pairs" in kinds):
            info = view(chain)  # classified once, shared by every dataset
            for sink in sinks:
                sink.add(info)
            chains += 1
            pending += 1
            if progress is not None and pending >= 1000:
                progress(pending)
                pending = 0
    except BaseException:
        for sink in sinks:
            sink.writer.close()
        raise
    if progress is not None and pending:
        progress(pending)
    seconds = time.perf_counter() - start
    return [sink.finish(chains, cutoff, seconds) for sink in sinks]


def export_dataset(
    kind: str,
    db_engine: Engine,
    out_dir: Path,
    *,
    since: date | datetime | None = None,
    blobs: BlobStore | None = None,
    progress: Callable[[int], None] | None = None,
) -> ExportResult:
    """Export one dataset; see :func:`export_datasets`."""
    return export_datasets([kind], db_engine, out_dir, since=since, blobs=blobs, progress=progress)[0]
