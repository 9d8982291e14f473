"""The cycle's generator stage: a LoRA for the UNet from pairs (Diffusion-DPO), from single labels (Diffusion-KTO),
or both, each gated on the same held-out image pairs; the better of those trained becomes the candidate.

``training.diffusion_objective`` picks ``dpo``, ``kto`` or ``both``. With ``both`` each objective that has enough
data trains in turn on the same loaded pipeline (the first's adapter is removed before the second starts), both are
measured by implicit preference accuracy on the held-out pairs, and the one with the higher accuracy (DPO on a tie)
is registered; the other's figures go into the version's metrics (``variants``), so the record says which signal
the generator learnt more from.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imageloop.training.diffusion_dpo import (
    ADAPTER_NAME,
    DiffusionDpoConfig,
    DiffusionDpoResult,
    train_diffusion_dpo,
)
from imageloop.training.diffusion_dpo_eval import evaluate_heldout
from imageloop.training.diffusion_kto import label_rows, train_diffusion_kto
from imageloop.training.gate import GateResult

__all__ = ["GeneratorVariant", "objectives_with_data", "train_generator_variants"]

Progress = Callable[[float, str], None]
Row = dict[str, Any]


@dataclass
class GeneratorVariant:
    """One trained objective: its folder, training result, gate verdict and held-out numbers."""

    objective: str
    out_dir: Path
    result: DiffusionDpoResult
    gate: GateResult
    heldout: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"heldout_accuracy": self.gate.candidate_accuracy, "gate_passed": self.gate.passed,
                "train_accuracy": self.result.train_accuracy, "steps": self.result.steps}


def objectives_with_data(objective: str, pairs: int, labels: Sequence[Row], minimum: int) -> tuple[list[str], str]:
    """The objectives of ``objective`` (dpo, kto, both) that have ``minimum`` training items (pairs for DPO, judged
    images with both verdicts for KTO), and a reason when none has."""
    chosen = ["dpo", "kto"] if objective == "both" else [objective]
    kept = sum(1 for row in labels if float(row.get("label") or 0) > 0.5)
    has = {"dpo": pairs >= minimum, "kto": len(labels) >= minimum and 0 < kept < len(labels)}
    usable = [name for name in chosen if has[name]]
    reason = "" if usable else (f"{pairs} image pairs and {len(labels)} judged images for training "
                                f"(need {minimum})")
    return usable, reason


def train_generator_variants(
    pipe: Any, objectives: Sequence[str], pairs_train: Sequence[Row], labels_train: Sequence[Row],
    pairs_test: Sequence[Row], config: DiffusionDpoConfig, run_dir: Path, *, width: int, height: int,
    parent: Path | None, confidence: float, min_pairs: int, info: dict[str, Any],
    on_progress: Progress | None = None,
) -> tuple[GeneratorVariant, dict[str, Any]]:
    """Train each of ``objectives`` on ``pipe`` and gate it on ``pairs_test`` against ``parent`` (or chance);
    the best variant and every variant's summary."""
    variants: list[GeneratorVariant] = []
    share = 1.0 / len(objectives)
    for number, objective in enumerate(objectives):
        if variants:  # the previous objective's adapter goes: each starts from the same UNet
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                pipe.unet.delete_adapters(ADAPTER_NAME)

        def progress(fraction: float, message: str, _n: int = number) -> None:
            if on_progress is not None:
                on_progress(share * (_n + 0.85 * fraction), message)

        out_dir = run_dir / f"diffusion_{objective}"
        # Not cleared first: a checkpoint left there by an interrupted attempt resumes the training.
        if objective == "dpo":
            result = train_diffusion_dpo(pipe, pairs_train, config, out_dir, width=width, height=height,
                                         init_from=parent, on_progress=progress, info=info)
        else:
            result = train_diffusion_kto(pipe, label_rows(labels_train), config, out_dir, width=width,
                                         height=height, init_from=parent, on_progress=progress, info=info)
        progress(1.0, f"diffusion {objective}: evaluating on held-out pairs")
        gate, heldout = evaluate_heldout(pipe, pairs_test, config, width=width, height=height, confidence=confidence,
                                         current=parent, min_pairs=min_pairs)
        variants.append(GeneratorVariant(objective, out_dir, result, gate, heldout))
    best = max(variants, key=lambda v: (v.gate.candidate_accuracy, v.objective == "dpo"))
    return best, {"trained": [v.objective for v in variants], "chosen": best.objective,
                  **{v.objective: v.summary() for v in variants}}
