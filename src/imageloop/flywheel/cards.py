"""Dataset cards: the README.md written next to each exported Parquet file."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa

DESCRIPTIONS = {
    "sft": (
        "Supervised fine-tuning pairs for the prompt expander: `prompt` is what the user asked for (their intent, "
        "any language) and `completion` the final prompt of a generation whose image they kept (downloaded, "
        "shared or liked). Use with TRL's `SFTTrainer` (prompt-completion format)."
    ),
    "dpo": (
        "Preference pairs for the prompt expander: for one intent (`prompt`), `chosen` is the final prompt of a "
        "generation the user kept and `rejected` one they rerolled away from, replaced with their own edit, or "
        "discarded, in the same reroll/edit chain. TRL's `DPOTrainer` takes it as is."
    ),
    "pairs": (
        "Image preference pairs in the Pick-a-Pic layout: `jpg_0`/`jpg_1` are JPEG bytes, `label_0`/`label_1` say "
        "which one the user preferred (1.0 = kept). `source` is `siblings` (two images of one generation; "
        "`caption` is its prompt) or `reroll` (a kept image against an image of a rejected generation; `caption` "
        "is the user's intent). Which side holds the kept image is decided by a hash, not by position."
    ),
    "labels": (
        "Single images with the user's verdict (KTO-style binary feedback): `jpg` is JPEG bytes, `label` 1.0 when "
        "they kept it (downloaded, shared or liked) and 0.0 when they did not: `source` is `kept`, `sibling` (an "
        "image they did not keep beside one they did), `rerolled` (from a generation they rerolled away from or "
        "replaced with their own edit) or `discarded`. `caption` is the user's intent (the final prompt when there "
        "was none). Every judged image is a row, so there are far more labels than preference pairs."
    ),
    "recipes": (
        "How often each recipe and style leads to a kept image: `uses` counts succeeded generations, `kept` those "
        "with at least one kept image, and `keep_rate_low`/`keep_rate_high` bound `keep_rate` with a Wilson 95 % "
        "score interval. `(none)` means no recipe or style was used."
    ),
}


def dataset_card(kind: str, schema: pa.Schema, *, rows: int, chains: int, since: datetime | None) -> str:
    """A Hugging Face-style dataset card (YAML header + Markdown) describing an exported dataset."""
    columns = "\n".join(f"| `{f.name}` | `{f.type}` |" for f in schema)
    window = f"generations created since {since.isoformat()}" if since else "all generations"
    return f"""---
configs:
- config_name: default
  data_files: data.parquet
tags:
- imageloop
- {kind}
---
# Imageloop `{kind}` dataset

{DESCRIPTIONS[kind]}

- Rows: {rows}
- Chains read: {chains} ({window})
- Exported: {datetime.now(UTC).isoformat(timespec="seconds")}

## Load

```python
import datasets
ds = datasets.load_dataset("parquet", data_files="data.parquet", split="train")
```

## Columns

| column | type |
|---|---|
{columns}

## Provenance and privacy

Built from Imageloop's flywheel record: each generation request, its final prompt, and what the user did with the
images. Users who opted out of training use, and deleted users, are excluded. A chain is one first generation and
every generation rerolled or edited from it.
"""
