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

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import astuple, dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal, get_args

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
PAIRS_WRITE_BATCH = 256  # rows carry two JPEGs each

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


class _BatchWriter:
    """Writes rows (tuples in the schema's column order) to a Parquet file in batches, column by column."""

    def __init__(self, path: Path, schema: pa.Schema, batch: int) -> None:
        self._writer = pq.ParquetWriter(str(path), schema, compression=_compression(schema))
        self._schema = schema
        self._batch = batch
        self._rows: list[tuple[Any, ...]] = []
        self.count = 0

    def add(self, row: tuple[Any, ...]) -> None:
        self._rows.append(row)
        if len(self._rows) >= self._batch:
            self.flush()

    def flush(self) -> None:
        if self._rows:
            columns = [pa.array(values, type=column.type)
                       for values, column in zip(zip(*self._rows, strict=True), self._schema, strict=True)]
            self._writer.write_table(pa.Table.from_arrays(columns, schema=self._schema))
            self.count += len(self._rows)
            self._rows = []

    def close(self) -> None:
        self.flush()
        self._writer.close()


class _Dataset:
    """One dataset being written: turns chain views into rows of its Parquet file."""

    def __init__(self, kind: str, out_dir: Path, blobs: BlobStore | None) -> None:
        self.kind = kind
        self.folder = out_dir / kind
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "data.parquet"
        batch = PAIRS_WRITE_BATCH if kind in IMAGE_KINDS else WRITE_BATCH
        self.writer = _BatchWriter(self.path, SCHEMAS[kind], batch)
        self.tally = RecipeTally()
        self.images: JpegBatches[PairSpec | LabelSpec] | None = (
            JpegBatches(blobs, batch) if blobs is not None and kind in IMAGE_KINDS else None)
        self.skipped = 0

    def add(self, info: ChainView) -> None:
        if self.kind == "sft":
            for sft in sft_examples(info):
                self.writer.add((sft.prompt, sft.completion, sft.language, sft.generation_id))
        elif self.kind == "dpo":
            for dpo in dpo_examples(info):
                self.writer.add((dpo.prompt, dpo.chosen, dpo.rejected, dpo.chosen_generation_id,
                                 dpo.rejected_generation_id))
        elif self.kind == "recipes":
            self.tally.add(info)
        elif self.kind == "labels" and self.images is not None:
            for label in label_specs(info):
                self._write_images(self.images.add(label, (label.image.blob_key,)))
        elif self.images is not None:
            for spec in pair_specs(info):
                self._write_images(self.images.add(spec, (spec.image_0.blob_key, spec.image_1.blob_key)))

    def _write_images(self, done: list[tuple[PairSpec | LabelSpec, list[bytes | None]]]) -> None:
        for spec, jpegs in done:
            if None in jpegs:  # an image is missing from the blob store
                self.skipped += 1
            elif isinstance(spec, LabelSpec):
                self.writer.add((spec.caption, jpegs[0], spec.label, spec.image.id, spec.source))
            else:
                self.writer.add((spec.caption, jpegs[0], jpegs[1], spec.label_0, spec.label_1, spec.image_0.id,
                                 spec.image_1.id, spec.source))

    def close(self) -> None:
        """Stop the conversion threads and close the file (also after a failure)."""
        if self.images is not None:
            self.images.close()
        self.writer.close()

    def finish(self, chains: int, since: datetime | None) -> ExportResult:
        """Write what is still queued, close the file and write the card (the result's seconds are left 0)."""
        if self.images is not None:
            self._write_images(self.images.drain())
        for stat in self.tally.stats():
            self.writer.add(astuple(stat))
        self.close()
        card = self.folder / "README.md"
        card.write_text(dataset_card(self.kind, SCHEMAS[self.kind], rows=self.writer.count, chains=chains, since=since))
        transcoded = self.images.transcoded if self.images is not None else 0
        return ExportResult(self.kind, self.path, card, self.writer.count, chains, 0.0, self.skipped, transcoded)


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
    sinks = [_Dataset(kind, Path(out_dir), blobs) for kind in dict.fromkeys(kinds)]
    chains = pending = 0
    try:
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
