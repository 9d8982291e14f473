"""``imageloop bench flywheel``: simulated users through the real service, frozen vs the training flywheel."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from imageloop.bench.machine import MachineWatch
from imageloop.cli.groups import bench_app

# Sized so the three arms (frozen, online, full) finish within 45 minutes on 2 CPU cores with the embedded model (the
# recorded run's timings are in benchmarks/results/flywheel/).
DEFAULT_USERS = 32
DEFAULT_WEEKS = 6
QUICK = {"users": 4, "weeks": 2, "newcomers": 1}
DEFAULT_STRATEGIES = "local_llm,retrieval,rules"
# Training settings of the weekly cycles, so they fit the time budget: the expander's SFT as served (its passes over
# the record capped at 120 steps), short DPO and reward runs; Diffusion-DPO on fewer pairs than a server waits for.
# A third of the kept intents are held out (the gate still needs training.min_heldout_items, 30, of them: a week of a
# small cohort has fewer at the default fifth), and a candidate that passes serves half of the users in its A/B test.
TRAIN_CAPS = {"sft_max_steps": 120, "dpo_max_steps": 10, "reward_epochs": 4, "min_pairs": 8,
              "diffusion_dpo_min_pairs": 16, "diffusion_dpo_steps": 40, "heldout_fraction": 0.35, "ab_share": 0.5}
# How the simulated week's server runs its jobs unless told otherwise: two embedded workers of one torch thread each and
# batches of up to 16 images, the fastest setup `imageloop bench throughput` measured on 2 cores (one two-thread worker
# with batches of 8, the server's default, made each image cost about twice as much here).
SERVE = {"workers": 2, "threads": 1, "batch": 16}
QUICK_CAPS = {"sft_max_steps": 2, "dpo_max_steps": 4, "reward_epochs": 1, "min_pairs": 4,
              "diffusion_dpo_min_pairs": 8, "diffusion_dpo_steps": 4}


@bench_app.command("flywheel")
def bench_flywheel(
    weeks: Annotated[int | None, typer.Option(min=1, max=52, help=f"Simulated weeks (default {DEFAULT_WEEKS}).")]
    = None,
    users: Annotated[int | None, typer.Option(min=1, max=10_000, help=f"Simulated users (default {DEFAULT_USERS}).")]
    = None,
    cohort: Annotated[Path | None, typer.Option(help="Cohort YAML (default: the shipped cohort).")] = None,
    newcomers: Annotated[int | None, typer.Option(min=0, max=10_000, help="Users who join each week with no history "
                                                  "(default: the cohort's newcomers_per_week; 1 with --quick).")]
    = None,
    seed: Annotated[int, typer.Option(help="Seed of users, intents, first seeds and decisions.")] = 0,
    out: Annotated[Path, typer.Option(help="Folder for result.json, keep_rate.png and each arm's data dir.")] = Path(
        "benchmarks/results/flywheel"),
    arms: Annotated[str, typer.Option(help="Comma-separated arms: frozen, full, online (retrieval and memory, no "
                                      "training: separates the weekly retraining from the online half), no_dpo, "
                                      "no_memory, no_retrieval.")]
    = "frozen,full",
    quick: Annotated[bool, typer.Option("--quick", help="A tiny run (4 users, 2 weeks, minimal training).")] = False,
    model: Annotated[str | None, typer.Option(help="Model to serve (default: the embedded one).")] = None,
    judge: Annotated[Path | None, typer.Option(help="Attribute judge folder (default: the shipped judge).")] = None,
    strategies: Annotated[str, typer.Option(help="Expander strategies, comma-separated (default: as served; the "
                                            "local LLM answers once a cycle has promoted an adapter).")]
    = DEFAULT_STRATEGIES,
    steps: Annotated[int | None, typer.Option(min=1, help="Denoising steps (default: the model's).")] = None,
    threads: Annotated[int, typer.Option(min=0, help="Torch CPU threads of each worker's engine (0 = torch's "
                                         "default).")] = SERVE["threads"],
    workers: Annotated[int, typer.Option(min=1, max=32, help="Embedded worker threads, each with its own engine.")]
    = SERVE["workers"],
    batch: Annotated[int, typer.Option(min=1, max=64, help="Most images one pipeline call runs.")] = SERVE["batch"],
) -> None:
    """Run the arms with the same simulated users; print keep rate per week with 95% CIs, write JSON and PNG.

    Rerolls and edits get derived seeds (``jobs.reroll_seeds = "derived"``), so arms see the same images for the
    same requests and a run repeats."""
    watch = MachineWatch()  # before anything runs: how busy the machine was at the start
    from tqdm import tqdm

    from imageloop.bench.flywheel import FlywheelConfig, load_cohort, parse_arms, result_payload, run_flywheel
    from imageloop.bench.flywheel.report import plot_keep_rate, print_table, write_json
    from imageloop.config import ASSETS_DIR, EngineSettings
    from imageloop.training.base.judge import load_judge

    chosen = parse_arms(arms)
    loaded = load_cohort(cohort)
    if newcomers is not None or quick:
        arrivals = newcomers if newcomers is not None else min(loaded.newcomers_per_week, QUICK["newcomers"])
        loaded = dataclasses.replace(loaded, newcomers_per_week=arrivals)
    attribute_judge = load_judge(judge or ASSETS_DIR / "judge")
    base: dict[str, Any] = {"engine": {"model": model or EngineSettings().model, "threads": threads},
                            "jobs": {"workers": workers, "batch_max_size": batch},
                            "training": dict(QUICK_CAPS if quick else TRAIN_CAPS)}
    base["prompts"] = {"strategies": [s.strip() for s in strategies.split(",") if s.strip()]}
    config = FlywheelConfig(
        cohort=loaded, users=users or (QUICK["users"] if quick else DEFAULT_USERS),
        weeks=weeks or (QUICK["weeks"] if quick else DEFAULT_WEEKS), seed=seed, arms=chosen, out=out,
        base_settings=base, generation_params={"steps": steps} if steps else {},
    )
    console = Console(stderr=True)
    stages = sum(config.weeks * (2 if arm.trains else 1) for arm in chosen)
    with tqdm(total=stages, desc="flywheel", unit="stage") as bar:
        started = [0]

        def progress(message: str) -> None:
            # Called as a stage starts: the previous one is done.
            if started[0]:
                bar.update(1)
            started[0] += 1
            bar.set_postfix_str(message)

        run = run_flywheel(config, attribute_judge, on_progress=progress)
        bar.update(1)
    print_table(run.rows, Console(width=120))
    payload = result_payload(config, run)
    payload["machine"] = watch.record()
    write_json(out / "result.json", payload)
    if (busy := watch.warning()) is not None:
        typer.echo(f"warning: {busy}", err=True)
    plot_keep_rate(run.rows, out / "keep_rate.png")
    target = payload.get("target")
    if target is not None:
        low, high = target["ci95"]
        verdict = "met" if target["met"] else "NOT met"
        console.print(f"week {config.weeks}: full - frozen = {target['full_minus_frozen']:+.1%} "
                      f"(95% CI {low:+.1%} to {high:+.1%}); target (>= +20 points, CI above 0) {verdict}")
        for group, gap in target.get("groups", {}).items():
            low, high = gap["ci95"]
            console.print(f"week {config.weeks}, {group} sessions: full - frozen = {gap['full_minus_frozen']:+.1%} "
                          f"(95% CI {low:+.1%} to {high:+.1%})")
    _print_slang(console, payload.get("slang_targets", {}))
    console.print(f"wrote {out / 'result.json'} and {out / 'keep_rate.png'}")


def _print_slang(console: Console, targets: dict[str, Any]) -> None:
    """The learning half's slang figures, each with its rule and verdict."""
    for name in ("slang_full_minus_frozen", "slang_full_minus_online"):
        gap = targets.get(name)
        if gap is not None:
            other = name.rsplit("_", 1)[-1]
            low, high = gap["ci95"]
            verdict = "" if "met" not in gap else f"; target ({gap['rule']}) {'met' if gap['met'] else 'NOT met'}"
            console.print(f"week {gap['week']}, slang sessions: full - {other} = {gap[f'full_minus_{other}']:+.1%} "
                          f"(95% CI {low:+.1%} to {high:+.1%}){verdict}")
    growth = targets.get("newcomer_slang_growth")
    if growth is not None:
        last = f"week_{growth['last_week']}"
        console.print(f"newcomers' slang sessions (full): week 1 {growth['week_1']:.1%} -> {last.replace('_', ' ')} "
                      f"{growth[last]:.1%}; target ({growth['rule']}) {'met' if growth['met'] else 'NOT met'}")
    recall = targets.get("expander_slang_recall")
    if recall is not None:
        for row in recall["rows"]:
            console.print(f"served expander on {row['intents']} held-out {row['language']} slang intents: attribute "
                          f"recall {row['adapter']:.1%} vs base model {row['base']:.1%} ({row['gain']:+.1%})")
        console.print(f"target ({recall['rule']}) {'met' if recall['met'] else 'NOT met'}")
