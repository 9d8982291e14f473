from __future__ import annotations

from datetime import date
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest

from imageloop.errors import InvalidRequestError
from imageloop.flywheel.datasets import DpoExample, SftExample
from imageloop.flywheel.export import SCHEMAS, export_dataset
from imageloop.storage import Storage
from tests.flywheel.record import build_record, generate
from tests.storage.conftest import FakeClock


def _load(path: Path) -> datasets.Dataset:
    return datasets.load_dataset("parquet", data_files=str(path), split="train")


def test_sft_and_dpo(storage: Storage, tmp_path: Path) -> None:
    record = build_record(storage)
    sft = export_dataset("sft", storage.db_engine, tmp_path)
    rows = sorted(_load(sft.path).to_list(), key=lambda r: r["prompt"])
    assert [(r["prompt"], r["completion"]) for r in rows] == [
        ("a cozy cabin", "cozy log cabin in snow, golden hour, 35mm"),
        ("une voiture rouge", "a red car, studio light"),
    ]
    dpo = export_dataset("dpo", storage.db_engine, tmp_path)
    rows = sorted(_load(dpo.path).to_list(), key=lambda r: r["prompt"])
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in rows] == [
        ("a cozy cabin", "cozy log cabin in snow, golden hour, 35mm", "cabin, photo"),
        ("une voiture rouge", "a red car, studio light", "a blue car"),
    ]
    assert rows[0]["chosen_generation_id"] == record.cabin_kept.id
    assert (tmp_path / "dpo" / "README.md").read_text().count("DPOTrainer") == 1


def test_pairs_hold_jpeg_bytes_and_labels(storage: Storage, tmp_path: Path) -> None:
    record = build_record(storage)
    result = export_dataset("pairs", storage.db_engine, tmp_path, blobs=storage.blobs)
    rows = _load(result.path).to_list()
    kept = record.cabin_kept.images[1].id
    cabin = [r for r in rows if kept in (r["image_0_uid"], r["image_1_uid"])]
    # kept vs. its sibling, and vs. both images of the rerolled-away generation.
    assert sorted(r["source"] for r in cabin) == ["reroll", "reroll", "siblings"]
    for row in cabin:
        winner = 0 if row["image_0_uid"] == kept else 1
        assert (row["label_0"], row["label_1"]) == ((1.0, 0.0) if winner == 0 else (0.0, 1.0))
        assert row["jpg_0"][:2] == b"\xff\xd8" and row["jpg_1"][:2] == b"\xff\xd8"  # JPEG magic
        assert row["caption"] == ("cozy log cabin in snow, golden hour, 35mm" if row["source"] == "siblings"
                                  else "a cozy cabin")
    assert len(rows) == 3 + 3  # the car chain gives the same shape
    assert result.skipped == 0


def test_labels_hold_one_jpeg_and_its_verdict(storage: Storage, tmp_path: Path) -> None:
    record = build_record(storage)
    result = export_dataset("labels", storage.db_engine, tmp_path, blobs=storage.blobs)
    rows = {r["image_uid"]: r for r in _load(result.path).to_list()}
    kept = record.cabin_kept.images[1].id
    assert rows[kept]["label"] == 1.0 and rows[kept]["source"] == "kept" and rows[kept]["caption"] == "a cozy cabin"
    assert rows[record.cabin_kept.images[0].id]["source"] == "sibling"
    assert all(r["jpg"][:2] == b"\xff\xd8" for r in rows.values())
    assert sum(r["label"] for r in rows.values()) == 2  # one kept image in each of the two chains
    assert "KTO" in (tmp_path / "labels" / "README.md").read_text()
    with pytest.raises(InvalidRequestError, match="labels dataset needs the blob store"):
        export_dataset("labels", storage.db_engine, tmp_path / "x")


def test_recipes_keep_rate_with_interval(storage: Storage, tmp_path: Path) -> None:
    build_record(storage)
    rows = {(r["recipe"], r["style"]): r for r in _load(export_dataset("recipes", storage.db_engine, tmp_path).path)}
    assert set(rows) == {("film", "warm"), ("film", "noir"), ("(none)", "(none)")}
    noir = rows[("film", "noir")]  # car (rejected), dog (un-liked)... the edited child has no recipe
    assert (noir["uses"], noir["kept"], noir["keep_rate"]) == (2, 0, 0.0)
    warm = rows[("film", "warm")]
    assert (warm["uses"], warm["kept"]) == (2, 1)
    assert warm["keep_rate_low"] < 0.5 < warm["keep_rate_high"]


def test_opted_out_and_deleted_users_never_appear(storage: Storage, tmp_path: Path) -> None:
    build_record(storage)
    for kind in ("sft", "dpo", "pairs", "recipes"):
        result = export_dataset(kind, storage.db_engine, tmp_path, blobs=storage.blobs)
        table = pq.read_table(result.path)
        text = str(table.drop_columns([c for c in ("jpg_0", "jpg_1") if c in table.column_names]).to_pylist())
        assert "olga" not in text and "dan" not in text and "private" not in text and "secret" not in text


def test_since_filters_by_generation_date(storage: Storage, clock: FakeClock, tmp_path: Path) -> None:
    from imageloop.storage import ActionType

    ada, _ = storage.users.create_user("ada")
    old = generate(storage, ada.id, "old intent", "old prompt")
    storage.actions.record(ada.id, ActionType.LIKE, "a", image_id=old.images[0].id)
    clock.advance(3 * 86400)
    new = generate(storage, ada.id, "new intent", "new prompt")
    storage.actions.record(ada.id, ActionType.LIKE, "b", image_id=new.images[0].id)
    cutoff = (clock.now.date())
    result = export_dataset("sft", storage.db_engine, tmp_path, since=cutoff)
    assert [r["prompt"] for r in _load(result.path)] == ["new intent"]
    everything = export_dataset("sft", storage.db_engine, tmp_path, since=date(2000, 1, 1))
    assert everything.rows == 2


def test_unknown_kind_and_missing_blob_store(storage: Storage, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="kind"):
        export_dataset("rlhf", storage.db_engine, tmp_path)
    with pytest.raises(InvalidRequestError, match="blob"):
        export_dataset("pairs", storage.db_engine, tmp_path)


def test_text_examples_are_rows_in_their_dataset_column_order() -> None:
    # The export writes the examples as they are, so their fields must be the dataset's columns, in order.
    assert list(SftExample._fields) == SCHEMAS["sft"].names
    assert list(DpoExample._fields) == SCHEMAS["dpo"].names
