"""``imageloop train diffusion-dpo``: a Diffusion-DPO LoRA for the generator from an exported ``pairs`` folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from imageloop.cli.groups import train_app
from imageloop.config import load_settings
from imageloop.errors import InvalidRequestError


@train_app.command("diffusion-dpo")
def train_diffusion_dpo_command(
    pairs: Annotated[Path, typer.Option(help="An exported `pairs` folder (data.parquet: caption, jpg_0, jpg_1, "
                                             "label_0, label_1), or an export root holding pairs/.")],
    out: Annotated[Path, typer.Option(help="Where to write pytorch_lora_weights.safetensors and its metrics.")],
    model: Annotated[str | None, typer.Option(help="Model to train on (default: engine.model).")] = None,
    steps: Annotated[int | None, typer.Option(
        min=1, help="Optimizer steps [default: training.diffusion_dpo_steps].")] = None,
    beta: Annotated[float | None, typer.Option(
        min=0, help="DPO beta (per-element errors, so thousands) [default: training.diffusion_dpo_beta].")] = None,
    lr: Annotated[float | None, typer.Option(
        min=0, help="Learning rate [default: training.diffusion_dpo_learning_rate].")] = None,
    batch: Annotated[int | None, typer.Option(
        min=1, help="Preference pairs per step [default: training.diffusion_dpo_batch_size].")] = None,
    rank: Annotated[int | None, typer.Option(min=1, help="LoRA rank [default: training.diffusion_dpo_rank].")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of init, batches and noise.")] = None,
    heldout: Annotated[float | None, typer.Option(
        min=0, max=0.9, help="Share of captions held out to measure the implicit preference accuracy (0 = none) "
        "[default: training.heldout_fraction].")] = None,
    eval_draws: Annotated[int | None, typer.Option(
        min=1, help="Noise draws per held-out pair [default: training.diffusion_dpo_eval_draws].")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Train a LoRA on the generator's UNet that prefers the kept image of each pair (Diffusion-DPO), then report
    its implicit preference accuracy on held-out captions against the base UNet (chance = 0.5). An interrupted run
    resumes from the checkpoint in --out."""
    from tqdm import tqdm

    from imageloop.engine.loader import load_model
    from imageloop.training.data import split
    from imageloop.training.diffusion_dpo import (
        DiffusionDpoConfig,
        preference_rows,
        read_pairs_folder,
        train_diffusion_dpo,
    )
    from imageloop.training.diffusion_dpo_eval import evaluate_heldout

    settings = load_settings()
    config = DiffusionDpoConfig.from_settings(settings.training, beta=beta, learning_rate=lr, steps=steps,
                                              batch_size=batch, rank=rank, seed=seed, eval_draws=eval_draws)
    heldout = settings.training.heldout_fraction if heldout is None else heldout
    rows, ties = preference_rows(read_pairs_folder(pairs))
    if not rows:
        raise InvalidRequestError("--pairs", f"{pairs} holds no preference pairs ({ties} ties, which teach nothing)",
                                  allowed="pairs whose labels differ")
    train, test = split(rows, "caption", heldout) if heldout > 0 else (rows, [])
    loaded = load_model(model or settings.engine.model, settings)
    loaded.require_sd15("Diffusion-DPO")
    width, height = loaded.defaults.width, loaded.defaults.height
    with tqdm(total=config.steps, desc="Diffusion-DPO", unit="step", disable=None) as bar:

        def progress(fraction: float, message: str) -> None:
            bar.update(max(0, round(fraction * config.steps) - bar.n))
            bar.set_postfix_str(message.rsplit(", ", 1)[-1])

        result = train_diffusion_dpo(loaded.pipe, train, config, out, width=width, height=height,
                                     on_progress=progress,
                                     info={"base_model": loaded.name, "base_model_version": loaded.version})
    gate, extra = evaluate_heldout(loaded.pipe, test, config, width=width, height=height,
                                   confidence=settings.training.gate_confidence,
                                   min_pairs=settings.training.min_heldout_items)
    report = {"lora": str(result.path), "pairs": len(rows), "train_pairs": len(train), "heldout_pairs": len(test),
              "ties_left_out": ties, "steps": result.steps, "resumed_from": result.resumed_from,
              "final_loss": result.losses[-1] if result.losses else None, "gate": gate.to_dict(), **extra}
    (out / "heldout.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    if as_json:
        typer.echo(json.dumps(report, indent=1))
        return
    typer.echo(f"LoRA: {result.path} ({len(train)} training pairs, {result.steps} steps"
               f"{f', resumed at {result.resumed_from}' if result.resumed_from else ''})")
    typer.echo(f"held-out: {gate.reason}" if test else "held-out: none (--heldout 0)")
