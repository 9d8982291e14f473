"""``imageloop bench throughput``: concurrent clients through the HTTP server vs a naive diffusers loop."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import typer
from rich.console import Console
from rich.table import Table

from imageloop.bench.machine import MachineWatch
from imageloop.cli.groups import bench_app
from imageloop.config import load_settings

# engine.cpu_autocast's values (typed here without importing torch at CLI start-up)
AUTOCAST_CHOICES: dict[str, Literal["auto", "bf16", "off"]] = {"auto": "auto", "bf16": "bf16", "off": "off"}


@bench_app.command("throughput")
def bench_throughput(
    model: str | None = typer.Option(None, help="Model to serve [default: engine.model]."),
    clients: list[int] = typer.Option([8, 32], "--clients", min=1, max=256, help="Concurrent clients (repeat)."),
    requests_per_client: int = typer.Option(3, min=1, help="Requests each client makes."),
    naive_requests: int = typer.Option(8, min=1, help="Requests the naive loop makes."),
    steps: int | None = typer.Option(None, min=1, help="Denoising steps [default: the model's]."),
    size: str | None = typer.Option(None, help="WIDTHxHEIGHT [default: the model's]."),
    batch_max_size: int = typer.Option(16, min=1, max=64, help="Most jobs per pipeline call."),
    batch_max_wait_ms: int = typer.Option(100, min=0, help="How long the worker waits for a batch to fill."),
    autocast: str | None = typer.Option(
        None, help="CPU autocast of the server (and of the second naive loop): auto, bf16 or off "
        "[default: engine.cpu_autocast]."),
    workers: int | None = typer.Option(
        None, min=1, max=32, help="The server's embedded workers, each with its own engine [default: jobs.workers]."),
    threads: int | None = typer.Option(
        None, min=0, help="The server's torch threads (0 = torch's default) [default: engine.threads]. The naive "
        "loops always use torch's default."),
    out: Path = typer.Option(Path("benchmarks/results/throughput.json"), "--out", help="JSON result file."),
) -> None:
    """Images/s and p50/p95 latency of N concurrent clients through the real HTTP server, against a naive loop
    calling the diffusers pipeline one request at a time on the same model (target: >= 2x at 8 clients).

    When the server denoises under CPU bf16 autocast, a second naive loop runs under the same autocast, so the
    result separates the batching gain (vs the same dtype) from the dtype gain. On a few CPU cores and a small model,
    try --workers 2 --threads 1: two single-threaded generations side by side."""
    watch = MachineWatch()  # before anything runs: how busy the machine was at the start
    from imageloop.bench.throughput import ThroughputConfig, run_throughput_bench

    width = height = None
    if size is not None:
        try:
            width, height = (int(part) for part in size.lower().split("x"))
        except ValueError:
            raise typer.BadParameter(f"{size!r} is not WIDTHxHEIGHT", param_hint="--size") from None
    if autocast is not None and autocast not in AUTOCAST_CHOICES:
        raise typer.BadParameter(f"{autocast!r} is not auto, bf16 or off", param_hint="--autocast")
    config = ThroughputConfig(
        model=model, clients=tuple(clients), requests_per_client=requests_per_client, naive_requests=naive_requests,
        steps=steps, width=width, height=height, batch_max_size=batch_max_size, batch_max_wait_ms=batch_max_wait_ms,
        cpu_autocast=AUTOCAST_CHOICES[autocast] if autocast is not None else None, workers=workers, threads=threads,
    )
    result = run_throughput_bench(load_settings(), config, lambda message: typer.echo(message, err=True))
    _print(result)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**result, "machine": watch.record()}, indent=2) + "\n")
    if (busy := watch.warning()) is not None:
        typer.echo(f"warning: {busy}", err=True)
    typer.echo(f"wrote {out}")


def _print(result: dict[str, object]) -> None:
    table = Table(title="throughput: imageloop server vs naive diffusers loops (same model, same run)")
    columns = ("path", "compute", "clients", "images", "seconds", "images/s", "p50 s", "p95 s", "vs naive",
               "vs same dtype", "per CPU-s", "in UNet")
    for column in columns:
        table.add_column(column, justify="left" if column in ("path", "compute") else "right")
    naive = result["naive"]
    same = result.get("naive_same_dtype") or naive
    assert isinstance(naive, dict) and isinstance(same, dict)
    server = result["server"] if isinstance(result["server"], list) else []
    rows = [naive, *([same] if same is not naive else []), *server]
    for row in rows:
        ratio = row["images_per_s"] / naive["images_per_s"] if naive["images_per_s"] else 0.0
        same_ratio = row["images_per_s"] / same["images_per_s"] if same["images_per_s"] else 0.0
        cpu = row["images_per_cpu_s"] / naive["images_per_cpu_s"] if naive["images_per_cpu_s"] else 0.0
        compute = row["dtype"] + (f", {row['autocast']} autocast" if row["autocast"] != "off" else "")
        compute += f", {row['workers']}x{row['torch_threads']} thr"  # generations at once x torch threads each
        table.add_row(row["path"], compute, str(row["clients"]), str(row["images"]), f"{row['seconds']:.2f}",
                      f"{row['images_per_s']:.2f}", f"{row['latency_p50_s']:.2f}", f"{row['latency_p95_s']:.2f}",
                      f"{ratio:.2f}x", f"{same_ratio:.2f}x", f"{cpu:.2f}x", f"{row.get('denoiser_share', 0.0):.0%}")
    Console(width=160).print(table)  # 12 columns: readable when piped to a file too
    typer.echo(f"dtype gain (autocast loop / plain loop): {result['dtype_gain']:.2f}x")
    targets = result.get("target_ratios", {})
    met = result.get("targets_met", {})
    assert isinstance(targets, dict) and isinstance(met, dict)
    for clients, target in targets.items():
        if clients in met:
            typer.echo(f"target at {clients} clients: >= {target:.1f}x the naive loop: "
                       f"{'met' if met[clients] else 'NOT met'}")
