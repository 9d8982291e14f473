"""``imageloop bench events``: synthetic flywheel record → bulk insert → dataset export time and memory."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from imageloop.bench.events import (
    EXPORTED_KINDS,
    TARGET_EXPORT_SECONDS,
    TARGET_PEAK_RSS_MB,
    EventsBenchResult,
    ExportTiming,
    database_version,
    prepare_database,
    repository_ingest_rate,
    synthesise,
    time_exports,
)
from imageloop.bench.machine import MachineWatch
from imageloop.cli.groups import bench_app


@bench_app.command("events")
def bench_events(
    events: int = typer.Option(1_000_000, "--events", min=1, help="User actions to synthesise."),
    out: Path = typer.Option(Path("benchmarks/results/events.json"), "--out",
                             help="JSON result file (a folder: events.json in it)."),
    database_url: str | None = typer.Option(
        None, "--database-url",
        help="An EMPTY database to fill, SQLite or PostgreSQL (e.g. postgresql+psycopg://user@host/db; "
             "default: a temporary SQLite file).",
    ),
    ingest: int = typer.Option(2_000, "--ingest", min=0, help="Actions to record one by one for the ingest rate."),
    api_ingest: int = typer.Option(2_000, "--api-ingest", min=0, help="Actions to send through the HTTP API."),
    plot: bool = typer.Option(True, "--plot/--no-plot", help="Also write a PNG bar chart next to the JSON."),
    jpeg_copies: bool = typer.Option(
        True, "--jpeg-copies/--no-jpeg-copies",
        help="Images have the JPEG copies the worker stores (the export copies bytes); without, it re-encodes them.",
    ),
) -> None:
    """Export time and peak memory of the four datasets for N synthetic events (target for 1,000,000: all four in
    20 s, 2 GB)."""
    watch = MachineWatch()  # before anything runs: how busy the machine was at the start
    with tempfile.TemporaryDirectory(prefix="imageloop-bench-") as scratch:
        url = database_url or f"sqlite:///{Path(scratch) / 'events.db'}"
        db_engine = prepare_database(url)
        start = time.perf_counter()
        with tqdm(total=events, unit="event", desc="insert") as bar:

            def advance(done: int) -> None:
                bar.update(done)

            counts = synthesise(db_engine, events, progress=advance)
        insert_seconds = time.perf_counter() - start
        result = EventsBenchResult(events=counts.actions, database=db_engine.dialect.name,
                                   database_version=database_version(db_engine), counts=counts,
                                   insert_seconds=insert_seconds)
        db_engine.dispose()
        typer.echo(f"exporting {', '.join(EXPORTED_KINDS)}: each alone, then all in one pass...", err=True)
        result.exports, result.export_all = time_exports(url, Path(scratch) / "export", jpeg_copies=jpeg_copies)
        if ingest:
            result.ingest_actions_per_second = repository_ingest_rate(url, ingest)
    if api_ingest:
        from imageloop.bench.api_ingest import api_ingest as measure_api_ingest

        typer.echo(f"sending {api_ingest:,} actions through the HTTP API...", err=True)
        result.api_ingest_actions_per_second = {
            str(run.clients): run.actions_per_second for run in measure_api_ingest(api_ingest)
        }
    _report(result)
    if out.is_dir():
        out = out / "events.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**result.to_json(), "machine": watch.record()}, indent=2) + "\n")
    if (busy := watch.warning()) is not None:
        typer.echo(f"warning: {busy}", err=True)
    typer.echo(f"wrote {out}")
    if plot:
        typer.echo(f"wrote {_plot(result, out.with_suffix('.png'))}")


def _report(result: EventsBenchResult) -> None:
    table = Table(title=f"bench events: {result.events:,} actions on {result.database} {result.database_version}")
    for column in ("step", "wall s", "CPU s", "rows", "chains", "peak RSS MB", "of which start-up MB", "reader MB"):
        table.add_column(column, justify="right")
    c = result.counts
    table.add_row("insert", f"{result.insert_seconds:.1f}", "",
                  f"{c.actions:,}", "", "", "", "")
    for e in result.exports:
        _export_row(table, e.kind, e)
    if result.export_all is not None:
        _export_row(table, "all, one pass", result.export_all)
    if result.ingest_actions_per_second is not None:
        table.add_row("ingest (repository, 1 by 1)", f"{result.ingest_actions_per_second:,.0f}/s", "", "", "", "",
                      "", "")
    for clients, rate in (result.api_ingest_actions_per_second or {}).items():
        table.add_row(f"ingest (HTTP API, {clients} client{'s' if clients != '1' else ''})", f"{rate:,.0f}/s",
                      "", "", "", "", "", "")
    verdict = "OK" if result.meets_targets else "OVER TARGET"
    table.caption = (f"inserted with {c.generations:,} generations and {c.images:,} images\n"
                     f"each dataset alone, then all in one pass; target for all: {TARGET_EXPORT_SECONDS:.0f} s, "
                     f"{TARGET_PEAK_RSS_MB:.0f} MB (export and reader peaks added): {verdict}\n"
                     f"{_transcoded(result)} images re-encoded for want of a stored JPEG copy\n"
                     f"{result.cpus} CPUs, load average {result.load_average[0]:.1f} at the end")
    Console().print(table)


def _transcoded(result: EventsBenchResult) -> int:
    return result.export_all.transcoded if result.export_all is not None else 0


def _export_row(table: Table, label: str, e: ExportTiming) -> None:
    table.add_row(label, f"{e.seconds:.1f}", f"{e.cpu_seconds:.1f}", f"{e.rows:,}", f"{e.chains:,}",
                  f"{e.peak_rss_mb:.0f}", f"{e.baseline_rss_mb:.0f}", f"{e.reader_peak_rss_mb:.0f}")


def _plot(result: EventsBenchResult, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    exports = result.exports + ([result.export_all] if result.export_all is not None else [])
    kinds = [e.kind for e in exports]
    left.bar(kinds, [e.seconds for e in exports])
    left.axhline(TARGET_EXPORT_SECONDS, color="red", linestyle="--", label="target (all)")
    left.set_title(f"export seconds ({result.events:,} events, {result.database})")
    left.legend()
    right.bar(kinds, [e.peak_rss_mb for e in exports], label="peak RSS")
    right.bar(kinds, [e.reader_peak_rss_mb for e in exports], bottom=[e.peak_rss_mb for e in exports],
              label="reader process")
    right.bar(kinds, [e.baseline_rss_mb for e in exports], label="start-up")
    right.set_title("memory (MB)")
    right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
