"""``imageloop export sft|dpo|pairs|labels|recipes --out DIR [--since DATE]``: datasets from the flywheel record."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import typer
from tqdm import tqdm

from imageloop.cli.groups import export_app
from imageloop.config import load_settings
from imageloop.errors import InvalidRequestError
from imageloop.flywheel.export import EXPORT_KINDS, count_chains, export_dataset, since_datetime
from imageloop.storage import Storage
from imageloop.storage.records import utcnow

_HELP = {
    "sft": "Intent → final prompt of kept images (TRL SFT prompt/completion).",
    "dpo": "Intent, chosen (kept) and rejected (rerolled away / edited) prompts (TRL DPO).",
    "pairs": "Image preference pairs, Pick-a-Pic style (caption, jpg_0, jpg_1, label_0, label_1).",
    "labels": "Single judged images: caption, jpg, label (1 kept, 0 not) for KTO and pointwise reward models.",
    "recipes": "Per recipe and style: uses, kept, keep rate with a Wilson 95% interval.",
}


def parse_since(value: str | None) -> datetime | None:
    """``--since`` as UTC: a date (midnight UTC) or an ISO datetime; InvalidRequestError naming it otherwise."""
    if value is None:
        return None
    try:
        return since_datetime(datetime.fromisoformat(value))
    except ValueError as exc:
        raise InvalidRequestError("since", f"not a date: {value!r}", allowed="YYYY-MM-DD or an ISO datetime") from exc


def run_export(kind: str, out: Path, since: str | None) -> None:
    """Export one dataset with a progress bar, then say where it is."""
    cutoff = parse_since(since)
    until = utcnow()  # the progress bar counts the chains the export will walk: the same window
    storage = Storage.open(load_settings())
    try:
        total = count_chains(storage.db_engine, since=cutoff, until=until)
        with tqdm(total=total, unit="chain", desc=f"export {kind}", disable=None) as bar:

            def advance(chains: int) -> None:
                bar.update(chains)

            result = export_dataset(kind, storage.db_engine, out, since=cutoff, until=until, blobs=storage.blobs,
                                    progress=advance)
    finally:
        storage.close()
    typer.echo(f"{result.rows} rows from {result.chains} chains in {result.seconds:.1f} s → {result.path}")
    if result.skipped:
        typer.echo(f"skipped {result.skipped} rows whose images are missing from the blob store", err=True)
    if result.transcoded:
        typer.echo(f"re-encoded {result.transcoded} images that have no stored JPEG copy", err=True)


def _register(kind: str) -> None:
    def command(
        out: Path = typer.Option(..., "--out", help="Folder; the dataset goes to OUT/<kind>/ (Parquet + README)."),
        since: str | None = typer.Option(None, "--since", help="Only generations created on or after this date."),
    ) -> None:
        run_export(kind, out, since)

    command.__doc__ = _HELP[kind]
    export_app.command(kind)(command)


for _kind in EXPORT_KINDS:
    _register(_kind)
