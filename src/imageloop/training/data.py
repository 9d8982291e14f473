"""What a cycle trains on: the exported datasets, narrowed to the top-K kept intents and split for the gate.

Pure functions over rows (dicts with the export's column names), so they are easy to test; reading Parquet and
hashing the snapshot are the only I/O.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

__all__ = ["CycleData", "heldout", "read_rows", "snapshot_hash", "split", "top_k_intents"]

Row = dict[str, Any]


def read_rows(path: Path, columns: Sequence[str] | None = None) -> list[Row]:
    """The rows of an exported Parquet file (empty when the file does not exist), in content order.

    The export writes chains in id order, and ids are random: sorting by the rows' values makes what a cycle trains
    on, and which held-out items its gate takes, the same for the same record however its ids fell."""
    if not path.is_file():
        return []
    rows = pq.read_table(str(path), columns=list(columns) if columns else None).to_pylist()
    return sorted(rows, key=_content_key)


def _content_key(row: Row) -> tuple[tuple[int, Any], ...]:
    """A sort key over a row's values in column order: None first, text and bytes as they are, others by repr."""
    return tuple((0, "") if value is None else (1, value) if isinstance(value, str | bytes) else (1, repr(value))
                 for value in row.values())


def snapshot_hash(paths: Iterable[Path]) -> str:
    """SHA-256 over the bytes of the given files (missing ones count as empty), in the order given."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        if path.is_file():
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def top_k_intents(sft: Sequence[Row], k: int) -> set[str]:
    """The ``k`` intents with the most kept generations (ties broken by the intent text, so it is stable)."""
    counts = Counter(str(row["prompt"]).strip() for row in sft if row.get("prompt"))
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return {intent for intent, _ in ranked[:k]}


def heldout(key: str, fraction: float) -> bool:
    """Whether ``key`` (an intent or caption) belongs to the held-out split: a stable hash, so a pair never moves
    between splits from one cycle to the next."""
    bucket = int.from_bytes(hashlib.sha256(key.strip().lower().encode()).digest()[:8], "big") / 2**64
    return bucket < fraction


def split(rows: Sequence[Row], key: str, fraction: float) -> tuple[list[Row], list[Row]]:
    """(train, held-out) by the hash of ``row[key]``; if that leaves either side empty while there are at least
    two rows, every fifth row goes to held-out instead (tiny datasets still get a gate)."""
    train = [row for row in rows if not heldout(str(row[key]), fraction)]
    test = [row for row in rows if heldout(str(row[key]), fraction)]
    if (not train or not test) and len(rows) >= 2:
        held = set(range(4, len(rows), 5)) or {len(rows) - 1}
        train = [row for i, row in enumerate(rows) if i not in held]
        test = [row for i, row in enumerate(rows) if i in held]
    return train, test


@dataclass
class CycleData:
    """The exported datasets of one cycle, narrowed and split."""

    sft: list[Row] = field(default_factory=list)
    dpo_train: list[Row] = field(default_factory=list)
    dpo_test: list[Row] = field(default_factory=list)
    pairs_train: list[Row] = field(default_factory=list)
    pairs_test: list[Row] = field(default_factory=list)
    labels_train: list[Row] = field(default_factory=list)  # single judged images, split by caption as the pairs are

    @classmethod
    def load(cls, folder: Path, *, top_k: int, heldout_fraction: float) -> CycleData:
        """Read ``folder/{sft,dpo,pairs,labels}/data.parquet`` (as written by the flywheel export), keep the top-K kept
        intents for the expander, and split by intent (expander) and caption (reward model)."""
        sft = read_rows(folder / "sft" / "data.parquet", ["prompt", "completion"])
        dpo = read_rows(folder / "dpo" / "data.parquet", ["prompt", "chosen", "rejected"])
        pairs = read_rows(folder / "pairs" / "data.parquet", ["caption", "jpg_0", "jpg_1", "label_0", "label_1"])
        keep = top_k_intents(sft, top_k)
        sft = [row for row in sft if str(row["prompt"]).strip() in keep]
        dpo = [row for row in dpo if str(row["prompt"]).strip() in keep]
        dpo_train, dpo_test = split(dpo, "prompt", heldout_fraction)
        held = {str(row["prompt"]).strip() for row in dpo_test}
        # Held-out intents stay out of the SFT warm-start too, so the gate measures generalisation.
        sft = [row for row in sft if str(row["prompt"]).strip() not in held]
        pairs_train, pairs_test = split(pairs, "caption", heldout_fraction)
        labels = read_rows(folder / "labels" / "data.parquet", ["caption", "jpg", "label"])
        # Only the training side is kept: a caption held out for the pairs is held out for the labels too.
        labels_train = [row for row in labels if not heldout(str(row["caption"]), heldout_fraction)]
        return cls(sft, dpo_train, dpo_test, pairs_train, pairs_test, labels_train)

    def counts(self) -> dict[str, int]:
        return {"sft": len(self.sft), "dpo_train": len(self.dpo_train), "dpo_test": len(self.dpo_test),
                "pairs_train": len(self.pairs_train), "pairs_test": len(self.pairs_test),
                "labels_train": len(self.labels_train)}
