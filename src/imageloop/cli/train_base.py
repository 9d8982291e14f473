"""`imageloop train base` (the embedded text-to-image model) and `imageloop train judge` (its attribute judge)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from imageloop.cli.groups import train_app
from imageloop.config import load_settings
from imageloop.errors import InvalidRequestError


def _default_checkpoints() -> Path:
    return load_settings().data_dir / "checkpoints" / "embedded"


def _config_default(name: str) -> Any:
    """The default of ``BaseTrainConfig.<name>``: the run config defines each default once."""
    import dataclasses

    from imageloop.training.base.train import BaseTrainConfig

    return next(f.default for f in dataclasses.fields(BaseTrainConfig) if f.name == name)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGINT stop training the way Ctrl-C does (the loop saves a checkpoint on its way out), also in
    a background run, where the shell starts the process with SIGINT ignored. Handlers are restored after."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers belong to the main thread
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, _interrupt)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@train_app.command("base")
def train_base(
    data: Annotated[Path, typer.Option(help="Dataset folder; rendered deterministically when missing.")],
    out: Annotated[Path, typer.Option(help="Export the trained pipeline (diffusers folder) here.")],
    minutes: Annotated[float | None, typer.Option(
        min=0, help="Wall-clock budget of this run, all stages [default: BaseTrainConfig.minutes].")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the newest checkpoint.")] = False,
    checkpoints: Annotated[
        Path | None, typer.Option(help="Checkpoint folder (default: <data_dir>/checkpoints/embedded).")
    ] = None,
    export_only: Annotated[bool, typer.Option("--export-only", help="Only export the newest checkpoint.")] = False,
    dataset_size: Annotated[int | None, typer.Option(
        min=64, help="Images rendered when the dataset is built [default: BaseTrainConfig.dataset_size].")] = None,
    vae_steps: Annotated[int | None, typer.Option(
        min=1, help="Total autoencoder steps (batch 16) [default: BaseTrainConfig.vae_steps].")] = None,
    batch_size: Annotated[int | None, typer.Option(
        min=1, help="Diffusion batch size [default: BaseTrainConfig.batch_size].")] = None,
    threads: Annotated[int, typer.Option(min=1, help="Torch CPU threads (1 is faster on a busy 2-core machine).")] = 1,
    tiny: Annotated[bool, typer.Option("--tiny", help="Tiny networks (smoke tests only).")] = False,
    autocast: Annotated[str | None, typer.Option(
        help="bf16 autocast: auto (only where bf16 measures faster than fp32), bf16, off "
        "[default: BaseTrainConfig.autocast].")] = None,
    polish_decoder_minutes: Annotated[float, typer.Option(
        "--polish-decoder", min=0, help="Instead of training: fine-tune only the decoder for N more minutes.")] = 0.0,
    subject_loss_weight: Annotated[float | None, typer.Option(
        min=0, help="Extra loss weight on the subject's latent pixels (0 = plain MSE) "
        "[default: BaseTrainConfig.subject_loss_weight].")] = None,
    subject_text_loss_weight: Annotated[float | None, typer.Option(
        min=0, help="Weight of the text encoder's auxiliary subject classification loss (0 = off) "
        "[default: BaseTrainConfig.subject_text_loss_weight].")] = None,
    ema_decay: Annotated[float | None, typer.Option(
        min=0.0, max=0.99999, help="EMA decay of the exported weights (lower tracks a fast run closer) "
        "[default: BaseTrainConfig.ema_decay].")] = None,
    init_from: Annotated[Path | None, typer.Option(
        "--init-from", help="Seed an empty checkpoint folder from this exported model and continue training it "
        "(when the checkpoints are gone).")] = None,
) -> None:
    """Train the embedded model on procedurally rendered scenes, resuming from checkpoints, then export it."""
    import torch

    from imageloop.training.base.model import TRAIN_AUTOCAST, ModelSize
    from imageloop.training.base.train import BaseTrainConfig, export_pipeline, polish_decoder, run_training

    autocast = autocast or _config_default("autocast")
    if autocast not in TRAIN_AUTOCAST:
        raise InvalidRequestError("--autocast", f"must be one of {', '.join(TRAIN_AUTOCAST)}, not {autocast!r}")
    torch.set_num_threads(threads)
    ckpt = checkpoints or _default_checkpoints()
    if init_from is not None:
        from imageloop.training.base.seed import seed_from_export

        if any(ckpt.glob("*.pt")):
            raise InvalidRequestError("--init-from", f"checkpoints already exist in {ckpt}",
                                      allowed="an empty --checkpoints folder, or --resume without --init-from")
        info = seed_from_export(init_from, ckpt)
        typer.echo(f"seeded {ckpt} from {init_from} (step {info.get('step')}, {info.get('images_seen')} images)")
        resume = True
    if polish_decoder_minutes > 0:
        polish_decoder(ckpt, data, polish_decoder_minutes, autocast)
    elif not export_only:
        if not resume and any(ckpt.glob("*.pt")):
            raise InvalidRequestError("--resume", f"checkpoints already exist in {ckpt}",
                                      allowed="--resume to continue them, or another --checkpoints folder")
        given: dict[str, Any] = {
            "minutes": minutes, "dataset_size": dataset_size, "vae_steps": vae_steps, "batch_size": batch_size,
            "subject_loss_weight": subject_loss_weight, "subject_text_loss_weight": subject_text_loss_weight,
            "ema_decay": ema_decay}
        cfg = BaseTrainConfig(data_dir=data, checkpoint_dir=ckpt, out_dir=out, autocast=autocast,
                              size=ModelSize.tiny() if tiny else ModelSize(),
                              **{name: value for name, value in given.items() if value is not None})
        try:
            with stop_on_signals():
                trained = run_training(cfg)
        except KeyboardInterrupt:
            typer.echo(f"stopped; the newest checkpoint is in {ckpt}: continue with --resume, or export it with "
                       "--export-only", err=True)
            raise typer.Exit(130) from None
        if trained is None:
            typer.echo(f"budget spent before diffusion training began; run again with --resume ({ckpt})")
            return
    info = export_pipeline(ckpt, out)
    typer.echo(f"exported {info['checkpoint']} ({info['images_seen']} images seen, "
               f"{info['training_minutes']} min) to {out}")


@train_app.command("judge")
def train_judge_command(
    data: Annotated[Path, typer.Option(help="Dataset folder of real composites (rendered when missing).")],
    out: Annotated[Path | None, typer.Option(help="Where to save the judge (default: the shipped assets).")] = None,
    minutes: Annotated[float, typer.Option(min=0, help="Training time.")] = 5.0,
    validation_images: Annotated[int, typer.Option(min=16, help="Held-out real images to validate on.")] = 2000,
    threads: Annotated[int, typer.Option(min=1, help="Torch CPU threads.")] = 1,
    resume: Annotated[bool, typer.Option("--resume", help="Continue training the judge saved in --out.")] = False,
    seed: Annotated[int | None, typer.Option(
        help="Seed of batches and augmentation (vary it when resuming) [default: train_judge's].")] = None,
    lr: Annotated[float | None, typer.Option(
        min=0, help="Starting learning rate (decays linearly to a tenth) [default: train_judge's].")] = None,
) -> None:
    """Train the attribute judge on real composites only and report its accuracy on held-out real images."""
    import torch
    from tqdm import tqdm

    from imageloop.config import ASSETS_DIR
    from imageloop.training.base.dataset import build_dataset, load_dataset
    from imageloop.training.base.judge import accuracy, load_judge, save_judge, train_judge, validation_set

    torch.set_num_threads(threads)
    dataset = load_dataset(data) if (data / "manifest.json").is_file() else \
        build_dataset(data, _config_default("dataset_size"))
    target = out or ASSETS_DIR / "judge"
    start_model = load_judge(target) if resume else None
    with tqdm(total=int(minutes * 60), desc="judge", unit="s", mininterval=10) as bar:
        start = time.monotonic()

        def on_step(step: int, loss: float) -> None:
            bar.n = min(int(time.monotonic() - start), int(minutes * 60))
            bar.set_postfix(step=step, loss=f"{loss:.3f}", refresh=False)
            bar.update(0)

        given: dict[str, Any] = {"seed": seed, "lr": lr}
        model = train_judge(dataset.images, dataset.labels, minutes=minutes, on_step=on_step, start=start_model,
                            **{name: value for name, value in given.items() if value is not None})
    images, labels = validation_set(validation_images)
    metrics = accuracy(model, images, labels)
    save_judge(model, target, metrics)
    for name, acc in metrics.items():
        typer.echo(f"{name:12s} {acc:.4f}")
    typer.echo(f"saved to {target}")
