"""Diffusion-KTO on tiny random SD components: the objective, the labels it reads, and real training steps on single
judged images (kept ones are bright on the left, the others bright on the right) that make the LoRA prefer the kept
layout on held-out *pairs*, the gate both generator objectives share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from imageloop.errors import TrainingError
from imageloop.training.diffusion_dpo import preference_rows
from imageloop.training.diffusion_dpo_eval import evaluate_heldout
from imageloop.training.diffusion_kto import diffusion_kto_loss, encode_labels, label_rows, train_diffusion_kto
from imageloop.training.generator_stage import objectives_with_data
from tests.training.test_diffusion_dpo import FAST, SIZE, SUBJECTS, half_bright, toy_pairs, toy_pipeline


def toy_labels(n: int) -> list[dict[str, Any]]:
    """A ``labels`` export: every other image kept (bright on the left), the rest not (bright on the right)."""
    return [{"caption": f"a {SUBJECTS[i % len(SUBJECTS)]}", "jpg": half_bright(i % 2 == 0, 300 + i),
             "label": 1.0 if i % 2 == 0 else 0.0} for i in range(n)]


def test_the_loss_rewards_lowering_the_error_of_kept_images_and_raising_the_others() -> None:
    ref = torch.tensor([1.0, 1.0])
    kept = torch.tensor([1.0, 0.0])
    good, _ = diffusion_kto_loss(torch.tensor([0.9, 1.1]), ref, kept, beta=10.0)
    bad, _ = diffusion_kto_loss(torch.tensor([1.1, 0.9]), ref, kept, beta=10.0)
    same, reward = diffusion_kto_loss(ref.clone(), ref, kept, beta=10.0)
    assert float(good) < float(same) < float(bad) and float(same) == pytest.approx(0.5)
    assert reward.tolist() == [0.0, 0.0]


def test_label_rows_name_a_bad_row_and_training_needs_both_verdicts() -> None:
    with pytest.raises(TrainingError, match="labels row 1: no 'jpg'"):
        label_rows([{"caption": "a", "jpg": b"x", "label": 1}, {"caption": "b", "label": 0}])
    with pytest.raises(TrainingError, match="labels row 0: the label must be a number"):
        label_rows([{"caption": "a", "jpg": b"x", "label": "yes"}])
    with pytest.raises(TrainingError, match="both kept and not-kept"):
        encode_labels(toy_pipeline(), label_rows([r for r in toy_labels(4) if r["label"]]), width=SIZE, height=SIZE)


def test_which_objectives_have_enough_data() -> None:
    labels = toy_labels(10)
    assert objectives_with_data("both", 3, labels, 8) == (["kto"], "")
    assert objectives_with_data("both", 9, labels, 8) == (["dpo", "kto"], "")
    assert objectives_with_data("dpo", 3, labels, 8)[0] == []
    only_kept = [r for r in labels if r["label"]] * 4
    none, reason = objectives_with_data("kto", 0, only_kept, 8)
    assert none == [] and "20 judged images" in reason


def test_training_on_single_labels_learns_the_preference_held_out_pairs_show(tmp_path: Path) -> None:
    pipe = toy_pipeline()
    heldout, _ = preference_rows(toy_pairs(16, offset=1000))
    progress: list[float] = []
    result = train_diffusion_kto(pipe, label_rows(toy_labels(48)), FAST, tmp_path / "kto", width=SIZE, height=SIZE,
                                 on_progress=lambda fraction, _message: progress.append(fraction))
    assert result.path.is_file() and progress[-1] == 1.0 and len(result.losses) == FAST.steps
    assert (tmp_path / "kto" / "diffusion_kto.json").is_file()
    gate, extra = evaluate_heldout(pipe, heldout, FAST, width=SIZE, height=SIZE, confidence=0.9, min_pairs=16)
    assert gate.candidate_accuracy >= 0.75 and extra["mean_margin"] > 0, gate.reason
