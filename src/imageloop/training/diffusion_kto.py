"""Diffusion-KTO: a LoRA for the generator's UNet trained on single judged images, kept or not (Li et al. 2024,
"Aligning Diffusion Models by Optimizing Human Utility", after Ethayarajh et al.'s KTO).

Image pairs are scarce (a person must reroll and then keep), but every image someone kept, discarded or rerolled
away from is a label: the flywheel's ``labels`` export. Each image is noised at a random timestep; its implicit
reward is how much the policy (the UNet with the LoRA) lowers the denoising error below the reference (the same UNet
with its adapters off), as in Diffusion-DPO. KTO compares that reward with a reference point ``z`` (the batch's
mean reward, clamped at zero and not differentiated: an estimate of how far the policy has drifted) and maximises a
sigmoid utility: kept images above it, the others below::

    r    = beta * (ref_err - err)
    loss = 1 - sigmoid(r - z)   for a kept image      (weight ``desirable_weight``)
           1 - sigmoid(z - r)   for any other image   (weight ``undesirable_weight``)

The LoRA, its format, the optimizer and the checkpointing are those of :mod:`imageloop.training.diffusion_dpo`, so
the cycle gates both kinds the same way: implicit preference accuracy on held-out image pairs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from imageloop.errors import TrainingError
from imageloop.training.diffusion_dpo import (
    DiffusionDpoConfig,
    DiffusionDpoResult,
    DiffusionDpoStopped,
    _pixels,
    add_dpo_adapter,
    denoising_errors,
    training_scheduler,
)
from imageloop.training.lora_loop import run_lora_loop

__all__ = ["EncodedLabels", "diffusion_kto_loss", "encode_labels", "label_rows", "train_diffusion_kto"]

INFO_FILE = "diffusion_kto.json"
_ENCODE_CHUNK = 8
Progress = Callable[[float, str], None]
Row = dict[str, Any]


def label_rows(rows: Sequence[Row]) -> list[Row]:
    """The rows of a ``labels`` export as ``{"caption", "image", "kept"}``; TrainingError naming a row without a
    caption, an image or a label."""
    out: list[Row] = []
    for index, row in enumerate(rows):
        for column in ("caption", "jpg", "label"):
            if row.get(column) is None:
                raise TrainingError(f"labels row {index}: no {column!r}")
        try:
            kept = float(row["label"]) > 0.5
        except (TypeError, ValueError) as exc:
            raise TrainingError(f"labels row {index}: the label must be a number, got {row['label']!r}") from exc
        out.append({"caption": str(row["caption"]), "image": bytes(row["jpg"]), "kept": kept, "row": index})
    return out


@dataclass
class EncodedLabels:
    """Judged images ready for the UNet: latents, 1.0 for kept / 0.0 for not, and the captions' encodings."""

    latents: torch.Tensor  # (N, C, h, w)
    kept: torch.Tensor  # (N,)
    context: torch.Tensor  # (N, tokens, dim)

    def __len__(self) -> int:
        return int(self.latents.shape[0])


@torch.no_grad()
def encode_labels(pipe: Any, rows: Sequence[Row], *, width: int, height: int) -> EncodedLabels:
    """Encode :func:`label_rows` rows with ``pipe``'s VAE (posterior mean) and text encoder, a few at a time."""
    if not rows:
        raise TrainingError("Diffusion-KTO needs at least one judged image")
    if all(r["kept"] for r in rows) or not any(r["kept"] for r in rows):
        raise TrainingError("Diffusion-KTO needs both kept and not-kept images")
    vae, device = pipe.vae, pipe.unet.device
    latents: list[torch.Tensor] = []
    context: list[torch.Tensor] = []
    for start in range(0, len(rows), _ENCODE_CHUNK):
        chunk = rows[start:start + _ENCODE_CHUNK]
        where = [f"labels row {r.get('row', start + i)}: jpg" for i, r in enumerate(chunk)]
        pixels = _pixels([r["image"] for r in chunk], width, height, where).to(device, vae.dtype)
        latents.append((vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor).float())
        context.append(pipe.encode_prompt([r["caption"] for r in chunk], device, 1, False)[0])
    kept = torch.tensor([1.0 if r["kept"] else 0.0 for r in rows])
    return EncodedLabels(torch.cat(latents), kept, torch.cat(context))


def diffusion_kto_loss(model_err: torch.Tensor, ref_err: torch.Tensor, kept: torch.Tensor, beta: float, *,
                       desirable_weight: float = 1.0, undesirable_weight: float = 1.0
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean loss, per-image implicit reward) from per-image denoising errors of the policy and the reference."""
    reward = beta * (ref_err - model_err)
    z = reward.detach().mean().clamp(min=0.0)
    utility = torch.where(kept > 0.5, torch.sigmoid(reward - z), torch.sigmoid(z - reward))
    weights = torch.where(kept > 0.5, torch.full_like(reward, desirable_weight),
                          torch.full_like(reward, undesirable_weight))
    return (weights * (1.0 - utility)).mean(), reward.detach()


def train_diffusion_kto(
    pipe: Any,
    rows: Sequence[Row],
    config: DiffusionDpoConfig,
    out_dir: Path,
    *,
    width: int,
    height: int,
    init_from: Path | None = None,
    on_progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    info: dict[str, Any] | None = None,
) -> DiffusionDpoResult:
    """Train a Diffusion-KTO LoRA on ``pipe``'s UNet with :func:`label_rows` rows, in the Diffusion-DPO LoRA's place
    and format (``out_dir/pytorch_lora_weights.safetensors``, plus ``diffusion_kto.json``).

    1. Encode the judged images; the desirable weight balances kept against not-kept images (KTO's advice).
    2. Add the LoRA (from ``init_from`` when given), resume a checkpoint of the same config and data size.
    3. Each step: a batch of images, one noise and timestep each, policy and reference errors, the KTO loss.
    4. Save the LoRA; it stays active on ``pipe.unet`` for the held-out evaluation."""
    unet = pipe.unet
    torch.manual_seed(config.seed)
    data = encode_labels(pipe, rows, width=width, height=height)
    kept = float(data.kept.sum())
    desirable = (len(data) - kept) / kept  # so kept and not-kept images weigh the same in all
    params = add_dpo_adapter(unet, config, init_from)
    scheduler = training_scheduler(pipe)
    autocast = unet.device.type == "cuda" and unet.dtype != torch.float32

    def step(generator: torch.Generator) -> tuple[torch.Tensor, list[float]]:
        loss, reward, labels = _step(unet, scheduler, data, config, generator, autocast, desirable)
        return loss, [float((r > 0) == (k > 0.5)) for r, k in zip(reward.tolist(), labels.tolist(), strict=True)]

    outcome = run_lora_loop(unet, params, config, out_dir, stamp={"labels": len(data), "objective": "kto"},
                            step=step, name="Diffusion-KTO", on_progress=on_progress, should_stop=should_stop,
                            stopped=DiffusionDpoStopped)
    result = DiffusionDpoResult(outcome.path, config.steps, outcome.resumed_from, outcome.losses,
                                outcome.train_accuracy)
    meta = {"objective": "kto", "config": asdict(config), "labels": len(data), "kept": int(kept),
            "result": result.to_dict(), **(info or {})}
    (out_dir / INFO_FILE).write_text(json.dumps(meta, indent=1, default=str) + "\n", encoding="utf-8")
    return result


def _step(unet: Any, scheduler: Any, data: EncodedLabels, config: DiffusionDpoConfig, generator: torch.Generator,
          autocast: bool, desirable: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    device = unet.device
    # Twice the DPO batch: a pair is two images, so a step sees as many images either way.
    index = torch.randint(0, len(data), (2 * config.batch_size,), generator=generator)
    latents = data.latents[index]
    noise = torch.randn(latents.shape, generator=generator).to(device)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (len(index),), generator=generator).to(device)
    context = data.context[index]
    with torch.autocast(device.type, dtype=unet.dtype, enabled=autocast):
        errors = denoising_errors(unet, scheduler, latents, noise, t, context)
        unet.disable_adapters()
        try:
            with torch.no_grad():
                ref = denoising_errors(unet, scheduler, latents, noise, t, context)
        finally:
            unet.enable_adapters()
    labels = data.kept[index].to(errors.device)
    loss, reward = diffusion_kto_loss(errors, ref, labels, config.beta, desirable_weight=desirable)
    return loss, reward, labels.detach().cpu()
