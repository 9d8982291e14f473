"""``imageloop bench engine``: engine vs plain diffusers, images/s, UNet FLOPs vs the measured matmul rate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from imageloop.bench.machine import MachineWatch
from imageloop.cli.groups import bench_app
from imageloop.config import load_settings


@bench_app.command("engine")
def bench_engine(
    model: Annotated[str | None, typer.Option(help="Model (default: settings.engine.model).")] = None,
    config: Annotated[Path | None, typer.Option(help="Config folder for a single-file checkpoint.")] = None,
    steps: Annotated[int | None, typer.Option(help="Steps (default: the model's).")] = None,
    cfg: Annotated[float | None, typer.Option("--cfg", help="CFG scale (default: the model's).")] = None,
    size: Annotated[str | None, typer.Option(help="WIDTHxHEIGHT (default: the model's).")] = None,
    scheduler: Annotated[str | None, typer.Option(help="A1111 sampler name (default: the model's).")] = None,
    batch: Annotated[int, typer.Option(min=1, max=64, help="Images per run.")] = 1,
    repeats: Annotated[int, typer.Option(min=1, max=100, help="Timed runs per path (after one warm-up).")] = 3,
    out: Annotated[Path | None, typer.Option(help="Write the JSON result here.")] = None,
    gpu_out: Annotated[Path | None, typer.Option(
        help="Where the GPU result goes when torch sees a CUDA device (the same measurement on CUDA; default: OUT "
             "with '-gpu' before the suffix).")] = None,
) -> None:
    """Our engine against a plain diffusers pipeline call on the same model and settings (warm, same run); with a
    CUDA device, also on the GPU, written to its own JSON."""
    watch = MachineWatch()  # before anything runs: how busy the machine was at the start
    from imageloop.bench.engine import EngineBenchConfig, run_engine_bench, run_gpu_engine_bench
    from imageloop.cli.generate import parse_size

    width, height = parse_size(size) if size else (None, None)
    bench = EngineBenchConfig(model=model, config=config, steps=steps, guidance_scale=cfg, width=width,
                              height=height, scheduler=scheduler, batch=batch, repeats=repeats)
    console = Console(stderr=True)
    settings = load_settings()
    with console.status("benchmarking") as status:
        result = run_engine_bench(settings, bench, progress=lambda message: status.update(message))
    Console().print(result_table(result))
    if out is not None:
        _write(out, {**result, "machine": watch.record()}, watch, console)
    gpu_path = gpu_out or (out.with_name(f"{out.stem}-gpu{out.suffix}") if out is not None else None)
    gpu: dict[str, Any] | None = result
    if not result["machine"]["device"].startswith("cuda"):
        with console.status("benchmarking on the GPU") as status:
            gpu = run_gpu_engine_bench(settings, bench, progress=lambda message: status.update(message))
        if gpu is not None:
            Console().print(result_table(gpu))
    if gpu is None:
        console.print("no GPU: torch sees no CUDA device, so there is no GPU result"
                      + (f" ({gpu_path} not written)" if gpu_path is not None else ""))
    elif gpu_path is not None:
        _write(gpu_path, {**gpu, "machine": {**gpu["machine"], **watch.record()}}, watch, console)


def _write(path: Path, result: dict[str, Any], watch: MachineWatch, console: Console) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if (busy := watch.warning()) is not None:
        typer.echo(f"warning: {busy}", err=True)
    console.print(f"wrote {path}")


def result_table(result: dict[str, Any]) -> Table:
    """The human-readable summary of a bench result."""
    s, unet = result["settings"], result["unet"]
    title = (f"{result['model']['name']} ({result['model']['architecture']}) on {result['machine']['device']}: "
             f"{s['width']}x{s['height']}, {s['steps']} steps {s['scheduler']}, CFG {s['guidance_scale']:g}, "
             f"batch {s['batch']}")
    table = Table(title=title)
    for column in ("path", "median s/run", "images/s", "vs diffusers"):
        table.add_column(column, justify="right")
    plain, ours = result["diffusers"], result["engine"]
    table.add_row("diffusers pipeline call", f"{plain['median_s']:.3f}", f"{plain['images_per_s']:.3f}", "1.00x")
    table.add_row("imageloop engine", f"{ours['median_s']:.3f}", f"{ours['images_per_s']:.3f}",
                  f"{result['engine_vs_diffusers']:.2f}x")
    table.add_row("UNet at matmul peak", f"{unet['ideal_denoise_s']:.3f}", "", "")
    table.caption = (f"UNet {unet['flops_per_step'] / 1e9:.2f} GFLOP/step; matmul "
                     f"{unet['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s; engine at "
                     f"{100 * unet['engine_fraction_of_peak']:.1f}% of that bound")
    return table
