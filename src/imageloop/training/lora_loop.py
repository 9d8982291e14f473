"""The optimisation loop Diffusion-DPO and Diffusion-KTO share: a UNet LoRA trained step by step with AdamW and a
linear warm-up, progress and stop callbacks, a resumable checkpoint, and the LoRA saved at the end.

Each objective supplies one function, ``step(generator) -> (loss, hits)``: the loss of one batch (with gradients)
and, per item of the batch, 1.0 when the LoRA already orders it as people did (0.5 for a tie).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from imageloop.errors import TrainingError

__all__ = ["LoopOutcome", "StepFn", "run_lora_loop"]

StepFn = Callable[[torch.Generator], tuple[torch.Tensor, Sequence[float]]]
Progress = Callable[[float, str], None]


class LoopOutcome:
    """What a finished loop learnt: the LoRA file, the step it resumed from, the losses and the recent hit rate."""

    def __init__(self, path: Path, resumed_from: int, losses: list[float], train_accuracy: float) -> None:
        self.path = path
        self.resumed_from = resumed_from
        self.losses = losses
        self.train_accuracy = train_accuracy


def run_lora_loop(
    unet: Any, params: list[torch.nn.Parameter], config: Any, out_dir: Path, *, stamp: dict[str, Any],
    step: StepFn, name: str, on_progress: Progress | None = None, should_stop: Callable[[], bool] | None = None,
    stopped: Callable[[str], BaseException],
) -> LoopOutcome:
    """Run ``config.steps`` steps of ``step`` on ``params`` (``config``: a
    :class:`~imageloop.training.diffusion_dpo.DiffusionDpoConfig`), resuming a checkpoint in ``out_dir`` written
    with the same ``stamp``; save the LoRA (adapter :data:`~imageloop.training.diffusion_dpo.ADAPTER_NAME`) to
    ``out_dir``. ``should_stop`` returning True writes a checkpoint and raises ``stopped(message)``."""
    from imageloop.training.diffusion_dpo import ADAPTER_NAME, CHECKPOINT_FILE, _resume, _save_checkpoint
    from imageloop.training.user_lora import save_unet_lora

    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=1e-2)
    warmup = max(config.warmup_steps, 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda n: min(1.0, (n + 1) / warmup))
    generator = torch.Generator().manual_seed(config.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = out_dir / CHECKPOINT_FILE
    stamp = {"config": asdict(config), **stamp}
    start = _resume(checkpoint, stamp, unet, optimizer, schedule, generator)
    losses: list[float] = []
    hits: list[float] = []
    unet.train()
    done = start
    try:
        for number in range(start, config.steps):
            if should_stop is not None and should_stop():
                raise stopped(f"{name} stopped at step {number}/{config.steps}")
            loss, batch_hits = step(generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            if config.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            schedule.step()
            done = number + 1
            losses.append(float(loss.detach()))
            hits += list(batch_hits)
            if not math.isfinite(losses[-1]):
                raise TrainingError(f"{name} diverged at step {done} (loss {losses[-1]}); lower the learning rate")
            if config.checkpoint_every and done % config.checkpoint_every == 0 and done < config.steps:
                _save_checkpoint(checkpoint, stamp, done, unet, optimizer, schedule, generator)
            if on_progress is not None:
                on_progress(done / config.steps, f"{name} step {done}/{config.steps}, loss {losses[-1]:.4f}")
    except BaseException:
        if done > start:  # something was learnt since the last checkpoint: keep it for the resume
            _save_checkpoint(checkpoint, stamp, done, unet, optimizer, schedule, generator)
        raise
    unet.eval()
    path = save_unet_lora(unet, out_dir, ADAPTER_NAME)
    checkpoint.unlink(missing_ok=True)
    recent = hits[-4 * config.batch_size:]
    return LoopOutcome(path, start, losses, sum(recent) / len(recent) if recent else 0.5)
