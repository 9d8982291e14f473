"""``imageloop bench model``: prompt following of the embedded model on held-out combinations, EN vs ZH."""

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


@bench_app.command("model")
def bench_model(
    out: Annotated[Path, typer.Option(help="Folder for model.json and model-samples.png.")] = Path(
        "benchmarks/results"),
    model: Annotated[str | None, typer.Option(help="Model (default: engine.model's default, embedded).")] = None,
    judge: Annotated[Path | None, typer.Option(help="Judge folder (default: the shipped judge).")] = None,
    combinations: Annotated[int, typer.Option(min=4, help="Held-out combinations (x2 languages).")] = 96,
    effect_prompts: Annotated[int, typer.Option(min=4, help="Prompts per prompt-weight / negative arm.")] = 48,
    steps: Annotated[int | None, typer.Option(help="Steps (default: the model's).")] = None,
    cfg: Annotated[float | None, typer.Option("--cfg", help="CFG scale (default: the model's).")] = None,
    scheduler: Annotated[str | None, typer.Option(help="A1111 sampler name (default: the model's).")] = None,
    speed_repeats: Annotated[int, typer.Option(min=1, help="Timed runs per batch size.")] = 3,
    baseline: Annotated[str | None, typer.Option(
        help="Also measure this model in the same run and compare (e.g. a distilled student's teacher).")] = None,
) -> None:
    """Generate for held-out combinations in EN and ZH, judge each attribute, time batch 1 and 16."""
    watch = MachineWatch()  # before anything runs: how busy the machine was at the start
    from imageloop.bench.model import ModelBenchConfig, run_model_bench
    from imageloop.config import ASSETS_DIR, EngineSettings

    bench = ModelBenchConfig(model=model or EngineSettings().model, judge_dir=judge or ASSETS_DIR / "judge",
                             combinations=combinations, effect_prompts=effect_prompts, steps=steps,
                             guidance_scale=cfg, scheduler=scheduler, speed_repeats=speed_repeats,
                             baseline=baseline)
    console = Console(stderr=True)
    with console.status("benchmarking") as status:
        result, grid = run_model_bench(load_settings(), bench, progress=lambda message: status.update(message))
    for table in result_tables(result):
        Console().print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.json").write_text(json.dumps({**result, "machine": watch.record()}, indent=2) + "\n",
                                    encoding="utf-8")
    if (busy := watch.warning()) is not None:
        typer.echo(f"warning: {busy}", err=True)
    grid.save(out / "model-samples.png")
    console.print(f"wrote {out / 'model.json'} and {out / 'model-samples.png'}")


def result_tables(result: dict[str, Any]) -> list[Table]:
    """Prompt following, prompt-weight / negative effects, and speed, as tables."""
    rates, chance, targets = result["hit_rate"], result["chance"], result["targets"]
    follow = Table(title=f"{result['model']['name']}: judge finds the requested attribute "
                         f"({result['held_out_combinations']} held-out combinations per language)")
    for column in ("attribute", "chance", "EN", "ZH", "EN-ZH", "target"):
        follow.add_column(column, justify="right")
    for name in rates["en"]:
        target = targets.get(name)
        follow.add_row(name, f"{chance[name]:.2f}", f"{rates['en'][name]:.2f}", f"{rates['zh'][name]:.2f}",
                       f"{result['en_minus_zh'][name]:+.2f}", f"{target:.2f}" if target else "")
    eff = result["effects"]
    effects = Table(title=f"prompt weights ({eff['weighting']} weighting) and negative prompt: judge's rate of the "
                          f"word's value ({eff['prompts']} prompts per arm)")
    weights = list(next(iter(eff["weight_rate"].values())))
    for column in ("experiment", *[f"weight {w}" for w in weights], "works"):
        effects.add_column(column, justify="right")
    for word, rates in eff["weight_rate"].items():
        works = eff[f"weight_raises_{word}"] and eff[f"weight_lowers_{word}"]
        effects.add_row(f"({word}:w)", *[f"{rates[w]:.2f}" for w in weights], str(works))
    for word, rates in eff.get("weight_rate_a1111", {}).items():
        effects.add_row(f"({word}:w), A1111 weighting", *[f"{rates[w]:.2f}" for w in weights], "")
    effects.add_row("rain: no negative -> negative 'rain'", "", f"{eff['rain_rate']['no_negative']:.2f}",
                    f"{eff['rain_rate']['negative_rain']:.2f}", "", str(eff["negative_lowers_rain"]))
    speed = Table(title=f"speed (load average {result['speed']['load_average'][0]:.1f})")
    for column in ("batch", "engine s/img", "diffusers s/img", "engine vs diffusers", "target s/img"):
        speed.add_column(column, justify="right")
    for batch in (1, 16):
        row = result["speed"][f"batch_{batch}"]
        speed.add_row(str(batch), f"{row['engine_s_per_image']:.3f}", f"{row['diffusers_s_per_image']:.3f}",
                      f"{row['engine_vs_diffusers']:.2f}x", f"{row['target_s_per_image']:.2f}")
    distance = result["image_distance"]
    speed.caption = (f"image distance to real composites: KID x1000 = {distance['kid_x1000']:.2f} "
                     f"(+/- {distance['kid_std_x1000']:.2f}; two real sets: {distance['real_vs_real_kid_x1000']:.2f})")
    tables = [follow, effects, speed]
    if "versus_baseline" in result:
        tables.append(baseline_table(result))
    return tables


def baseline_table(result: dict[str, Any]) -> Table:
    """The model against its baseline, measured in the same run."""
    versus, base = result["versus_baseline"], result["baseline"]
    table = Table(title=f"{result['model']['name']} ({result['settings']['resolved']['steps']} steps) vs "
                        f"{versus['baseline']} ({base['resolved']['steps']} steps), same run")
    for column in ("measure", "model", "baseline", "difference / ratio", "95% interval", "target"):
        table.add_column(column, justify="right")
    intervals = versus.get("hit_rate_delta_ci95", {})
    for lang in ("en", "zh"):
        for name, delta in versus["hit_rate_delta"][lang].items():
            low, high = intervals.get(lang, {}).get(name, (float("nan"), float("nan")))
            table.add_row(f"{lang} {name}", f"{result['hit_rate'][lang][name]:.2f}",
                          f"{base['hit_rate'][lang][name]:.2f}", f"{delta:+.2f}", f"{low:+.2f} .. {high:+.2f}",
                          "" if name == "all" else f">= -{versus['within_points']:.2f}")
    for batch in (1, 16):
        key = f"batch_{batch}"
        table.add_row(f"s/image, batch {batch}", f"{result['speed'][key]['engine_s_per_image']:.3f}",
                      f"{base['speed'][key]['engine_s_per_image']:.3f}", f"{versus['speedup'][key]:.1f}x",
                      "", f">= {versus['speedup_target']:.0f}x")
    table.add_row("KID x1000", f"{result['image_distance']['kid_x1000']:.2f}",
                  f"{base['image_distance']['kid_x1000']:.2f}", f"{versus['kid_ratio']:.2f}x", "", "")
    return table
