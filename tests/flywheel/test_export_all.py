"""Every dataset exported in one pass is the same, row for row and byte for byte, as each exported alone."""

from __future__ import annotations

import gc
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from imageloop.bench.event_images import SyntheticImageStore
from imageloop.bench.events import prepare_database, synthesise
from imageloop.flywheel import export
from imageloop.flywheel.export import EXPORT_KINDS, IMAGE_ROW_GROUP_ROWS, export_dataset, export_datasets
from imageloop.flywheel.transcode import store_jpeg_copy
from imageloop.storage import Storage
from tests.flywheel.record import build_record


def _same_tables(together: Path, alone: Path, kinds: tuple[str, ...]) -> None:
    for kind in kinds:
        one_pass = pq.read_table(together / kind / "data.parquet")
        single = pq.read_table(alone / kind / "data.parquet")
        assert one_pass.num_rows > 0, kind
        assert one_pass.equals(single), kind


def test_one_pass_equals_each_alone_on_a_synthetic_record(database_url: str, tmp_path: Path) -> None:
    # Large enough that the image datasets span several conversion batches.
    db_engine = prepare_database(database_url)
    synthesise(db_engine, 8_000, users=40)
    blobs = SyntheticImageStore(pool_size=4)
    results = export_datasets(EXPORT_KINDS, db_engine, tmp_path / "together", blobs=blobs)
    for kind in EXPORT_KINDS:
        export_dataset(kind, db_engine, tmp_path / "alone", blobs=blobs)
    db_engine.dispose()
    assert {r.kind for r in results} == set(EXPORT_KINDS) and len({r.seconds for r in results}) == 1
    assert next(r for r in results if r.kind == "pairs").rows > IMAGE_ROW_GROUP_ROWS  # several row groups
    _same_tables(tmp_path / "together", tmp_path / "alone", EXPORT_KINDS)


def test_one_pass_equals_each_alone_on_the_hand_made_record(storage: Storage, tmp_path: Path) -> None:
    build_record(storage)
    export_datasets(EXPORT_KINDS, storage.db_engine, tmp_path / "together", blobs=storage.blobs)
    for kind in EXPORT_KINDS:
        export_dataset(kind, storage.db_engine, tmp_path / "alone", blobs=storage.blobs)
    _same_tables(tmp_path / "together", tmp_path / "alone", EXPORT_KINDS)


def test_a_missing_image_skips_its_rows_in_either_export(storage: Storage, tmp_path: Path) -> None:
    record = build_record(storage)
    storage.blobs.delete(record.cabin_kept.images[0].blob_key)
    together = {r.kind: r for r in export_datasets(["pairs", "labels"], storage.db_engine, tmp_path / "t",
                                                  blobs=storage.blobs)}
    pairs = export_dataset("pairs", storage.db_engine, tmp_path / "a", blobs=storage.blobs)
    assert together["pairs"].skipped == pairs.skipped == 1  # the kept image against its (missing) sibling
    assert together["labels"].skipped == 1
    assert pq.read_table(tmp_path / "t" / "pairs" / "data.parquet").equals(pq.read_table(pairs.path))


def test_stored_jpeg_copies_export_the_same_bytes_as_transcoding(database_url: str, tmp_path: Path) -> None:
    db_engine = prepare_database(database_url)
    synthesise(db_engine, 600, users=10)
    copied = export_datasets(["pairs", "labels"], db_engine, tmp_path / "copied",
                             blobs=SyntheticImageStore(pool_size=4))
    transcoded = export_datasets(["pairs", "labels"], db_engine, tmp_path / "transcoded",
                                 blobs=SyntheticImageStore(pool_size=4, jpeg_copies=False))
    db_engine.dispose()
    assert [r.transcoded for r in copied] == [0, 0]
    assert all(r.transcoded > 0 for r in transcoded)
    _same_tables(tmp_path / "copied", tmp_path / "transcoded", ("pairs", "labels"))


def test_a_record_without_jpeg_copies_still_exports_and_counts_the_transcoded(storage: Storage, tmp_path: Path) -> None:
    record = build_record(storage)  # images put straight in the blob store: no JPEG copies, as in an older record
    before = export_dataset("pairs", storage.db_engine, tmp_path / "before", blobs=storage.blobs)
    assert before.rows > 0 and before.transcoded > 0
    for generation in (record.cabin_first, record.cabin_kept, record.car_first, record.car_edited, record.unliked):
        for image in generation.images:
            assert store_jpeg_copy(storage.blobs, image.blob_key, storage.blobs.get(image.blob_key))
    after = export_dataset("pairs", storage.db_engine, tmp_path / "after", blobs=storage.blobs)
    assert after.transcoded == 0
    _same_tables(tmp_path / "before", tmp_path / "after", ("pairs",))


def test_the_export_switches_the_cyclic_collector_back_as_it_found_it(storage: Storage, tmp_path: Path) -> None:
    build_record(storage)
    assert gc.isenabled()
    export_datasets(["sft"], storage.db_engine, tmp_path / "on")
    assert gc.isenabled()
    gc.disable()
    try:
        export_datasets(["sft"], storage.db_engine, tmp_path / "off")
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_image_row_groups_end_at_their_byte_budget(storage: Storage, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    build_record(storage)
    monkeypatch.setattr(export, "IMAGE_BATCH", 1)  # JPEGs read chain by chain: several batches
    whole = export_dataset("pairs", storage.db_engine, tmp_path / "whole", blobs=storage.blobs)
    monkeypatch.setattr(export, "IMAGE_ROW_GROUP_BYTES", 1)  # every batch of rows is a row group of its own
    split = export_dataset("pairs", storage.db_engine, tmp_path / "split", blobs=storage.blobs)
    assert pq.ParquetFile(whole.path).metadata.num_row_groups == 1 < whole.rows
    assert pq.ParquetFile(split.path).metadata.num_row_groups > 1
    assert pq.read_table(split.path).equals(pq.read_table(whole.path))
