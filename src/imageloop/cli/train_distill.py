"""`imageloop train distill`: a few-step (LCM) student of the embedded model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from imageloop.cli.groups import train_app
from imageloop.cli.train_base import stop_on_signals
from imageloop.config import EMBEDDED_MODEL_DIR, load_settings
from imageloop.errors import InvalidRequestError


def _default(name: str) -> Any:
    import dataclasses

    from imageloop.training.base.distill import DistillConfig

    return next(f.default for f in dataclasses.fields(DistillConfig) if f.name == name)


@train_app.command("distill")
def train_distill(
    data: Annotated[Path, typer.Option(help="Dataset folder; rendered deterministically when missing.")],
    out: Annotated[Path, typer.Option(help="Export the student (diffusers folder, LCMScheduler) here.")],
    teacher: Annotated[Path, typer.Option(help="The teacher: an exported embedded model.")] = EMBEDDED_MODEL_DIR,
    minutes: Annotated[float | None, typer.Option(
        min=0, help="Wall-clock budget of this run [default: DistillConfig.minutes].")] = None,
    checkpoints: Annotated[Path | None, typer.Option(
        help="Checkpoint folder (default: <data_dir>/checkpoints/distill).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the newest checkpoint.")] = False,
    export_only: Annotated[bool, typer.Option("--export-only", help="Only export the newest checkpoint.")] = False,
    dataset_size: Annotated[int | None, typer.Option(
        min=64, help="Images rendered when the dataset is built [default: DistillConfig.dataset_size].")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Batch size [default: DistillConfig.batch_size].")
                          ] = None,
    lr: Annotated[float | None, typer.Option(min=0, help="Learning rate [default: DistillConfig.lr].")] = None,
    threads: Annotated[int, typer.Option(min=1, help="Torch CPU threads.")] = 2,
    init_from: Annotated[Path | None, typer.Option(
        "--init-from", help="Seed an empty checkpoint folder from this exported student and continue it.")] = None,
    save_every: Annotated[float | None, typer.Option(
        min=0.5, help="Checkpoint interval in minutes [default: DistillConfig.save_every_minutes].")] = None,
    keep: Annotated[int | None, typer.Option(
        min=1, help="Checkpoints kept [default: DistillConfig.keep_checkpoints].")] = None,
) -> None:
    """Distil the embedded model into a 4-step student (latent consistency distillation, guidance embedded)."""
    import torch

    from imageloop.training.base.distill import DistillConfig, export_student, run_distillation, seed_from_student

    torch.set_num_threads(threads)
    ckpt = checkpoints or load_settings().data_dir / "checkpoints" / "distill"
    if init_from is not None:
        seed_from_student(init_from, ckpt, DistillConfig(teacher_dir=teacher, data_dir=data, checkpoint_dir=ckpt))
        resume = True
    if not export_only:
        if not resume and any(ckpt.glob("distill-*.pt")):
            raise InvalidRequestError("--resume", f"checkpoints already exist in {ckpt}",
                                      allowed="--resume to continue them, or another --checkpoints folder")
        given: dict[str, Any] = {"minutes": minutes, "dataset_size": dataset_size, "batch_size": batch_size, "lr": lr,
                                 "save_every_minutes": save_every, "keep_checkpoints": keep}
        cfg = DistillConfig(teacher_dir=teacher, data_dir=data, checkpoint_dir=ckpt,
                            **{name: value for name, value in given.items() if value is not None})
        try:
            with stop_on_signals():
                run_distillation(cfg)
        except KeyboardInterrupt:
            typer.echo(f"stopped; the newest checkpoint is in {ckpt}: continue with --resume, or export it with "
                       "--export-only", err=True)
            raise typer.Exit(130) from None
    info = export_student(ckpt, teacher, out)
    typer.echo(f"exported {info['checkpoint']} ({info['images_seen']} images, {info['training_minutes']} min) "
               f"to {out}")
