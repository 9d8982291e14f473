"""A cycle reads its exported rows in content order, so the same record trains the same way however its random ids
(the export's chain order) fell."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from imageloop.training.data import CycleData, read_rows

ROWS = [
    {"caption": "a fox", "jpg_0": b"\x02", "jpg_1": b"\x01", "label_0": 1.0, "label_1": 0.0},
    {"caption": "a fox", "jpg_0": b"\x01", "jpg_1": b"\x03", "label_0": 0.5, "label_1": 0.5},
    {"caption": "a cat", "jpg_0": b"\x09", "jpg_1": b"\x00", "label_0": 0.0, "label_1": 1.0},
    {"caption": None, "jpg_0": b"\x05", "jpg_1": b"\x05", "label_0": 1.0, "label_1": 0.0},
]


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), str(path))
    return path


def test_rows_come_back_in_the_same_order_whatever_order_they_were_written_in(tmp_path: Path) -> None:
    orders = []
    for attempt in range(5):
        shuffled = ROWS.copy()
        random.Random(attempt).shuffle(shuffled)
        orders.append(read_rows(_write(tmp_path / f"{attempt}.parquet", shuffled)))
    assert all(order == orders[0] for order in orders)
    assert [row["caption"] for row in orders[0]] == [None, "a cat", "a fox", "a fox"]
    assert orders[0][2]["jpg_0"] == b"\x01"  # ties on the caption go by the next column


def test_a_cycles_splits_do_not_depend_on_the_export_order(tmp_path: Path) -> None:
    sft = [{"prompt": f"intent {i % 7}", "completion": f"tags {i}", "language": "en", "generation_id": f"g{i}"}
           for i in range(40)]
    loaded = []
    for attempt in range(3):
        shuffled = sft.copy()
        random.Random(attempt).shuffle(shuffled)
        folder = tmp_path / str(attempt)
        _write(folder / "sft" / "data.parquet", shuffled)
        _write(folder / "dpo" / "data.parquet", [{"prompt": r["prompt"], "chosen": r["completion"],
                                                   "rejected": "x"} for r in shuffled])
        loaded.append(CycleData.load(folder, top_k=5, heldout_fraction=0.3))
    assert all(data == loaded[0] for data in loaded)
    assert loaded[0].sft and loaded[0].dpo_test
