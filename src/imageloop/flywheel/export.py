"""Dataset export: stream the flywheel record out of the database, chain by chain, into Parquet + a dataset card.

Reads are streamed from one snapshot of the record with an upper time bound (:mod:`imageloop.storage.chains`:
three ordered cursors in one transaction, merged by chain id), examples come from the pure builders in
:mod:`imageloop.flywheel.datasets`, images are the JPEG copies the worker stored (re-encoded where a copy is
missing) read on a few threads (:mod:`imageloop.flywheel.transcode`), and rows are written in batches, column by
column, so memory stays flat however large the record.
Users who opted out of training, and deleted users, are filtered out in the query itself: their rows never leave
the database. Each dataset lands in ``OUT/<kind>/data.parquet`` with ``OUT/<kind>/README.md`` beside it, ready for
``datasets.load_dataset("parquet", data_files=...)``.
"""

from __future__ import annotations

import array
import contextlib
import gc
import itertools
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import astuple, dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar, get_args

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy.engine import Engine

from imageloop.errors import InvalidRequestError
from imageloop.flywheel.cards import dataset_card
from imageloop.flywheel.datasets import (
    ChainView,
    LabelSpec,
    PairSpec,
    RecipeTally,
    dpo_examples,
    label_specs,
    pair_specs,
    sft_examples,
    view,
)
from imageloop.flywheel.transcode import JpegBatches
from imageloop.storage.blobs import BlobStore
from imageloop.storage.chains import Chain, read_chains
from imageloop.storage.chains import count_chains as count_chains  # the CLI's progress bar
from imageloop.storage.records import utcnow

ExportKind = Literal["sft", "dpo", "pairs", "labels", "recipes"]
IMAGE_KINDS = frozenset({"pairs", "labels"})  # datasets that carry image bytes
EXPORT_KINDS: tuple[str, ...] = get_args(ExportKind)
WRITE_BATCH = 10_000
IMAGE_BATCH = 256  # image rows whose JPEGs are read together on one thread (one batch per thread in flight)
# Image rows are written in row groups of this many rows, or fewer where their JPEGs pass this many bytes (large
# images): Parquet writes a few large row groups much faster than many small ones.
IMAGE_ROW_GROUP_ROWS = 2_048
IMAGE_ROW_GROUP_BYTES = 64 * 2**20

SCHEMAS: dict[str, pa.Schema] = {
    "sft": pa.schema([("prompt", pa.string()), ("completion", pa.string()), ("language", pa.string()),
                      ("generation_id", pa.string())]),
    "dpo": pa.schema([("prompt", pa.string()), ("chosen", pa.string()), ("rejected", pa.string()),
                      ("chosen_generation_id", pa.string()), ("rejected_generation_id", pa.string())]),
    "pairs": pa.schema([("caption", pa.string()), ("jpg_0", pa.binary()), ("jpg_1", pa.binary()),
                        ("label_0", pa.float64()), ("label_1", pa.float64()), ("image_0_uid", pa.string()),
                        ("image_1_uid", pa.string()), ("source", pa.string())]),
    "labels": pa.schema([("caption", pa.string()), ("jpg", pa.binary()), ("label", pa.float64()),
                         ("image_uid", pa.string()), ("source", pa.string())]),
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
    transcoded: int = 0  # images without a stored JPEG copy, re-encoded from the stored image


def since_datetime(value: date | datetime | None) -> datetime | None:
    """``--since`` as an aware UTC datetime (a date means midnight UTC)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


def iter_chains(
    db_engine: Engine, *, since: datetime | None = None, until: datetime | None = None, images: bool = True
) -> Iterator[Chain]:
    """Every eligible chain created in ``[since, until)`` (``until``: now) with its generations, actions and (unless
    ``images`` is False) images, streamed in chain-id order from one snapshot of the record."""
    return read_chains(db_engine, since=since, until=until, images=images)


def _compression(schema: pa.Schema) -> dict[str, str]:
    # JPEG bytes do not compress: zstd would spend time on them for nothing.
    return {name: "none" if schema.field(name).type == pa.binary() else "zstd" for name in schema.names}


class _ParquetFile:
    """A dataset's Parquet file, written a row group at a time from columns in the schema's order."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self._writer = pq.ParquetWriter(str(path), schema, compression=_compression(schema))
        self._schema = schema
        self.count = 0

    def write(self, columns: Sequence[Sequence[Any]]) -> None:
        rows = len(columns[0]) if columns else 0
        if rows:
            arrays = [_binary_array(values) if field.type == pa.binary() else pa.array(values, type=field.type)
                      for values, field in zip(columns, self._schema, strict=True)]
            self._writer.write_table(pa.Table.from_arrays(arrays, schema=self._schema))
            self.count += rows

    def close(self) -> None:
        self._writer.close()


def _binary_array(values: Sequence[bytes]) -> pa.Array:
    """A binary column (JPEGs) built from one joined buffer: each value is copied once, where ``pa.array`` appends
    value by value to a growing buffer."""
    try:
        offsets = array.array("i", itertools.accumulate(map(len, values), initial=0))
    except OverflowError:  # past 2 GiB, more than 32-bit offsets can address: Arrow's own conversion deals with it
        return pa.array(values, type=pa.binary())
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(values))]
    return pa.Array.from_buffers(pa.binary(), len(values), buffers)


Spec = TypeVar("Spec", PairSpec, LabelSpec)


class _Dataset(ABC):
    """One dataset being written: turns chain views into rows of its Parquet file."""

    def __init__(self, kind: str, out_dir: Path) -> None:
        self.kind = kind
        self.folder = out_dir / kind
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "data.parquet"
        self.file = _ParquetFile(self.path, SCHEMAS[kind])
        self.skipped = 0
        self.transcoded = 0

    @abstractmethod
    def add(self, info: ChainView) -> None:
        """Take the rows of one chain (written when a batch is full)."""

    @abstractmethod
    def flush(self) -> None:
        """Write what is still held back (before :meth:`finish`)."""

    def close(self) -> None:
        """Stop any helper threads and close the file (also after a failure)."""
        self.file.close()

    def finish(self, chains: int, since: datetime | None) -> ExportResult:
        """Write what is still held back, close the file and write the card (the result's seconds are left 0)."""
        self.flush()
        self.close()
        card = self.folder / "README.md"
        card.write_text(dataset_card(self.kind, SCHEMAS[self.kind], rows=self.file.count, chains=chains, since=since))
        return ExportResult(self.kind, self.path, card, self.file.count, chains, 0.0, self.skipped, self.transcoded)


class _TextDataset(_Dataset):
    """``sft`` and ``dpo``: rows gathered as tuples, written ``WRITE_BATCH`` at a time."""

    def __init__(self, kind: str, out_dir: Path) -> None:
        super().__init__(kind, out_dir)
        self._rows: list[tuple[Any, ...]] = []

    def add(self, info: ChainView) -> None:
        # The examples are named tuples in the schema's column order: rows as they are.
        self._rows += sft_examples(info) if self.kind == "sft" else dpo_examples(info)
        if len(self._rows) >= WRITE_BATCH:
            self.flush()

    def flush(self) -> None:
        self.file.write(list(zip(*self._rows, strict=True)))
        self._rows = []


class _RecipeDataset(_Dataset):
    """``recipes``: a tally over every chain, written as one table at the end."""

    def __init__(self, kind: str, out_dir: Path) -> None:
        super().__init__(kind, out_dir)
        self._tally = RecipeTally()

    def add(self, info: ChainView) -> None:
        self._tally.add(info)

    def flush(self) -> None:
        self.file.write(list(zip(*(astuple(stat) for stat in self._tally.stats()), strict=True)))


class _ImageDataset(_Dataset, Generic[Spec]):
    """``pairs`` and ``labels``: specs gathered in batches whose JPEGs are read on threads, then written column by
    column with the bytes (rows whose image is missing from the blob store are skipped and counted)."""

    def __init__(self, kind: str, out_dir: Path, blobs: BlobStore) -> None:
        super().__init__(kind, out_dir)
        self._jpegs: JpegBatches[Spec] = JpegBatches(blobs)
        self._specs: list[Spec] = []
        schema = SCHEMAS[kind]
        self._binary = [index for index, field in enumerate(schema) if field.type == pa.binary()]
        self._group: list[list[Any]] = [[] for _ in schema]  # the next row group's columns
        self._group_bytes = 0

    @abstractmethod
    def specs(self, info: ChainView) -> Iterator[Spec]:
        """The chain's rows, without their bytes."""

    @abstractmethod
    def keys(self, spec: Spec) -> tuple[str, ...]:
        """The blob keys of the images a row holds."""

    @abstractmethod
    def columns(self, specs: list[Spec], jpegs: dict[str, bytes]) -> list[list[Any]]:
        """The rows' columns in the schema's order, with the bytes of every key."""

    def add(self, info: ChainView) -> None:
        self._specs += self.specs(info)
        if len(self._specs) >= IMAGE_BATCH:
            self._submit()

    def flush(self) -> None:
        self._submit()
        self._write(self._jpegs.drain())
        self._write_group()

    def close(self) -> None:
        self._jpegs.close()
        self.transcoded = self._jpegs.transcoded
        super().close()

    def _submit(self) -> None:
        if self._specs:
            specs, self._specs = self._specs, []
            self._write(self._jpegs.add(specs, (key for spec in specs for key in self.keys(spec))))

    def _write(self, done: Iterable[tuple[list[Spec], dict[str, bytes | None]]]) -> None:
        for specs, jpegs in done:
            if None in jpegs.values():  # an image is missing from the blob store
                found = [spec for spec in specs if all(jpegs[key] is not None for key in self.keys(spec))]
                self.skipped += len(specs) - len(found)
                specs = found
            if specs:
                columns = self.columns(specs, jpegs)  # type: ignore[arg-type]  # no None left
                for group, column in zip(self._group, columns, strict=True):
                    group += column
                self._group_bytes += sum(sum(map(len, columns[index])) for index in self._binary)
                if len(self._group[0]) >= IMAGE_ROW_GROUP_ROWS or self._group_bytes >= IMAGE_ROW_GROUP_BYTES:
                    self._write_group()

    def _write_group(self) -> None:
        self.file.write(self._group)
        self._group = [[] for _ in self._group]
        self._group_bytes = 0


class _PairsDataset(_ImageDataset[PairSpec]):
    def specs(self, info: ChainView) -> Iterator[PairSpec]:
        return pair_specs(info)

    def keys(self, spec: PairSpec) -> tuple[str, ...]:
        return spec.image_0.blob_key, spec.image_1.blob_key

    def columns(self, specs: list[PairSpec], jpegs: dict[str, bytes]) -> list[list[Any]]:
        return [[spec.caption for spec in specs], [jpegs[spec.image_0.blob_key] for spec in specs],
                [jpegs[spec.image_1.blob_key] for spec in specs], [spec.label_0 for spec in specs],
                [spec.label_1 for spec in specs], [spec.image_0.id for spec in specs],
                [spec.image_1.id for spec in specs], [spec.source for spec in specs]]


class _LabelsDataset(_ImageDataset[LabelSpec]):
    def specs(self, info: ChainView) -> Iterator[LabelSpec]:
        return label_specs(info)

    def keys(self, spec: LabelSpec) -> tuple[str, ...]:
        return (spec.image.blob_key,)

    def columns(self, specs: list[LabelSpec], jpegs: dict[str, bytes]) -> list[list[Any]]:
        return [[spec.caption for spec in specs], [jpegs[spec.image.blob_key] for spec in specs],
                [spec.label for spec in specs], [spec.image.id for spec in specs], [spec.source for spec in specs]]


def _dataset(kind: str, out_dir: Path, blobs: BlobStore | None) -> _Dataset:
    if kind in IMAGE_KINDS:
        assert blobs is not None  # checked by export_datasets
        return _PairsDataset(kind, out_dir, blobs) if kind == "pairs" else _LabelsDataset(kind, out_dir, blobs)
    return _RecipeDataset(kind, out_dir) if kind == "recipes" else _TextDataset(kind, out_dir)


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """The pass allocates millions of short-lived rows and tuples that hold no reference cycles: reference counting
    frees them, and the cyclic collector would only traverse them again and again (a third of the pass's time).
    It is switched back on afterwards (unless it was off before)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def export_datasets(
    kinds: Sequence[str],
    db_engine: Engine,
    out_dir: Path,
    *,
    since: date | datetime | None = None,
    until: datetime | None = None,
    blobs: BlobStore | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[ExportResult]:
    """Export several datasets (``sft``, ``dpo``, ``pairs``, ``labels``, ``recipes``) in ONE pass over the record,
    each to ``out_dir/<kind>/`` (``data.parquet`` + ``README.md``).

    Only generations created at or after ``since`` and before ``until`` (default: when the export starts) are
    read, all from one snapshot of the record. ``pairs`` and ``labels`` need ``blobs`` to read the images.
    ``progress`` is called with the number of chains done since its last call. Returns one result per kind (all
    with the same total ``seconds``).
    """
    for kind in kinds:
        if kind not in EXPORT_KINDS:
            raise InvalidRequestError("kind", f"unknown dataset {kind!r}", value=kind, allowed=", ".join(EXPORT_KINDS))
    needs_images = sorted(IMAGE_KINDS & set(kinds))
    if needs_images and blobs is None:
        raise InvalidRequestError("blobs", f"the {needs_images[0]} dataset needs the blob store to read images")
    start = time.perf_counter()
    cutoff = since_datetime(since)
    until = until or utcnow()
    sinks = [_dataset(kind, Path(out_dir), blobs) for kind in dict.fromkeys(kinds)]
    chains = pending = 0
    try:
        with _cyclic_gc_paused():
            # Only image pairs need the image rows; the text datasets skip that (largest) table.
            for chain in iter_chains(db_engine, since=cutoff, until=until, images=bool(needs_images)):
                info = view(chain)  # classified once, shared by every dataset
                for sink in sinks:
                    sink.add(info)
                chains += 1
                pending += 1
                if progress is not None and pending >= 1000:
                    progress(pending)
                    pending = 0
            results = [sink.finish(chains, cutoff) for sink in sinks]
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    if progress is not None and pending:
        progress(pending)
    seconds = time.perf_counter() - start
    return [replace(result, seconds=seconds) for result in results]


def export_dataset(
    kind: str,
    db_engine: Engine,
    out_dir: Path,
    *,
    since: date | datetime | None = None,
    until: datetime | None = None,
    blobs: BlobStore | None = None,
    progress: Callable[[int], None] | None = None,
) -> ExportResult:
    """Export one dataset; see :func:`export_datasets`."""
    return export_datasets([kind], db_engine, out_dir, since=since, until=until, blobs=blobs, progress=progress)[0]
