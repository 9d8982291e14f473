"""The gate's measure for a Diffusion-DPO LoRA: implicit preference accuracy on held-out pairs.

DPO defines a reward without a reward model: how much a LoRA lowers the denoising error of an image below the
reference UNet's (the same UNet with its adapters off). A LoRA *prefers* the kept image of a pair when that
reduction is larger for the kept image than for the other one (:func:`implicit_margins` > 0). Its accuracy is the
share of held-out pairs it gets right; the reference itself scores a tie on every pair (chance, 0.5), so a LoRA that
learnt nothing cannot pass. Each pair is judged on a few fixed noise/timestep draws, the same draws for every LoRA
compared, and :func:`evaluate_heldout` hands the per-pair verdicts to :func:`imageloop.training.gate.evaluate_gate`
(paired comparison with the current version, or chance, and a confidence interval on the gain).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from imageloop.training.diffusion_dpo import (
    ADAPTER_NAME,
    DiffusionDpoConfig,
    EncodedPairs,
    Row,
    denoising_errors,
    encode_pairs,
    training_scheduler,
)
from imageloop.training.gate import MIN_HELDOUT_ITEMS, GateResult, correctness, evaluate_gate

__all__ = ["CURRENT_ADAPTER", "evaluate_heldout", "implicit_margins"]

CURRENT_ADAPTER = "diffusion_dpo_current"
_EVAL_BATCH = 8


@torch.no_grad()
def implicit_margins(
    pipe: Any, data: EncodedPairs, adapters: Sequence[str], *, draws: int, seed: int
) -> dict[str, list[float]]:
    """Per adapter loaded on ``pipe.unet``, per pair: the mean over ``draws`` noise/timestep draws of
    (reference error - adapter error) on the kept image minus the same on the other image. Positive = the adapter
    prefers the kept image more than the reference does. Every adapter sees the same draws."""
    unet = pipe.unet
    device = unet.device
    scheduler = training_scheduler(pipe)
    generator = torch.Generator().manual_seed(seed)
    sums = {name: torch.zeros(len(data), dtype=torch.float64) for name in adapters}
    for start in range(0, len(data), _EVAL_BATCH):
        part = slice(start, start + _EVAL_BATCH)
        kept, other, context = data.kept[part], data.other[part], data.context[part]
        latents, context = torch.cat([kept, other]), context.repeat(2, 1, 1)
        for _ in range(draws):
            noise = torch.randn(kept.shape, generator=generator).to(device).repeat(2, 1, 1, 1)
            t = torch.randint(0, scheduler.config.num_train_timesteps, (kept.shape[0],), generator=generator)
            t = t.to(device).repeat(2)
            unet.disable_adapters()
            try:
                ref_kept, ref_other = denoising_errors(unet, scheduler, latents, noise, t, context).chunk(2)
            finally:
                unet.enable_adapters()
            for name in adapters:
                unet.set_adapter(name)
                model_kept, model_other = denoising_errors(unet, scheduler, latents, noise, t, context).chunk(2)
                margin = (ref_kept - model_kept) - (ref_other - model_other)
                sums[name][part] += margin.double().cpu()
    return {name: (total / draws).tolist() for name, total in sums.items()}


def evaluate_heldout(
    pipe: Any,
    rows: Sequence[Row],
    config: DiffusionDpoConfig,
    *,
    width: int,
    height: int,
    confidence: float,
    current: Path | None = None,
    min_pairs: int = MIN_HELDOUT_ITEMS,
) -> tuple[GateResult, dict[str, Any]]:
    """Gate the trained adapter (:data:`ADAPTER_NAME`, on ``pipe.unet``) on held-out :func:`preference_rows` rows
    against ``current`` (the serving version's LoRA file) or, without one, the reference (chance). Returns the
    verdict and a few numbers for the version's metrics (mean margins). Leaves the trained adapter active."""
    if not rows:
        return evaluate_gate([], None, confidence=confidence, min_pairs=min_pairs), {"heldout_pairs": 0}
    unet = pipe.unet
    adapters = [ADAPTER_NAME]
    with warnings.catch_warnings():
        # PEFT warns about a second adapter and about deleting the active one; both are intended here.
        warnings.simplefilter("ignore", UserWarning)
        if current is not None:
            unet.load_lora_adapter(str(current), prefix="unet", adapter_name=CURRENT_ADAPTER)
            adapters.append(CURRENT_ADAPTER)
        try:
            data = encode_pairs(pipe, rows, width=width, height=height)
            margins = implicit_margins(pipe, data, adapters, draws=config.eval_draws, seed=config.seed + 1)
        finally:
            if current is not None:
                unet.delete_adapters(CURRENT_ADAPTER)
            unet.set_adapter(ADAPTER_NAME)
    candidate = correctness(margins[ADAPTER_NAME])
    baseline = correctness(margins[CURRENT_ADAPTER]) if current is not None else None
    gate = evaluate_gate(candidate, baseline, confidence=confidence, min_pairs=min_pairs)
    extra = {"heldout_pairs": len(rows), "mean_margin": _mean(margins[ADAPTER_NAME]),
             "metric": "held-out implicit preference accuracy (denoising error vs the reference UNet)"}
    if current is not None:
        extra["current_mean_margin"] = _mean(margins[CURRENT_ADAPTER])
    return gate, extra


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0
