"""``imageloop train cycle``: run (or resume) one self-training cycle now, with a progress bar."""

from __future__ import annotations

import json

import typer
from tqdm import tqdm

from imageloop.cli.groups import train_app
from imageloop.config import load_settings
from imageloop.training.cycle import TRAINED_STAGES, CycleResult, run_cycle


@train_app.command("cycle")
def train_cycle(
    as_json: bool = typer.Option(False, "--json", help="Print the run record as JSON instead of a summary."),
) -> None:
    """Export the flywheel data since the last cycle, train the prompt expander (SFT + DPO LoRA), the reward model
    and the generator's Diffusion-DPO LoRA, gate each against the current version, and register them. Resumes an
    interrupted cycle; refuses to start while another one runs (also inside `imageloop serve`)."""
    settings = load_settings()
    with tqdm(total=1000, desc="training cycle", unit="‰", disable=None,
              bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}") as bar:

        def progress(fraction: float, message: str) -> None:
            bar.update(max(0, round(fraction * 1000) - bar.n))
            bar.set_postfix_str(message[:60])

        result = run_cycle(settings, on_progress=progress, trigger="cli")
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=1, default=str))
    else:
        typer.echo(summary(result))
    if result.status.value != "succeeded":
        raise typer.Exit(1)


def summary(result: CycleResult) -> str:
    """A few lines: the run, and for each model what the gate said and what happened to it."""
    run = result.run
    lines = [f"cycle {run.id}: {run.status.value}{' (resumed)' if result.resumed else ''}"
             f"{' — ' + run.message if run.message and run.status.value != 'succeeded' else ''}"]
    export = result.stages.get("export")
    if export:
        rows = ", ".join(f"{kind} {n}" for kind, n in export["rows"].items())
        lines.append(f"  data since {export['since'] or 'the beginning'}: {rows} (hash {export['data_hash'][:12]})")
    for stage in TRAINED_STAGES:
        out = result.stages.get(stage.name)
        if not out:
            continue
        if "skipped" in out:
            lines.append(f"  {stage.name}: skipped, {out['skipped']}")
        else:
            reason = (out.get("gate") or {}).get("reason", "")
            lines.append(f"  {stage.name} v{out['version']}: {out['status']} — {reason}")
    return "\n".join(lines)
