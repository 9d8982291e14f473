"""The reward model learns from single judged images as well as from pairs, and the record says what each adds."""

from __future__ import annotations

from typing import Any

from imageloop.training.reward import heldout_metrics, train_reward_model, train_reward_variants
from tests.training.records import BLUE, RED, png


def _labels(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """People keep red images and leave blue ones, one image at a time (no pair between them)."""
    return [{"caption": f"a cat {i}", "jpg": png(RED if i % 2 else BLUE, seed + i), "label": float(i % 2)}
            for i in range(count)]


def _pairs(count: int, seed: int) -> list[dict[str, Any]]:
    return [{"caption": f"a dog {i}", "jpg_0": png(BLUE, seed + i), "jpg_1": png(RED, seed + 500 + i),
             "label_0": 0.0, "label_1": 1.0} for i in range(count)]


def test_single_labels_alone_teach_the_preference_pairs_test() -> None:
    model = train_reward_model([], labels=_labels(48), epochs=8)
    assert heldout_metrics(model, _pairs(30, seed=3000))["heldout_pairwise_accuracy"] == 1.0


def test_the_variants_report_pairs_alone_beside_pairs_and_labels() -> None:
    steps: list[float] = []
    model, variants = train_reward_variants(_pairs(4, seed=0), _labels(48), _pairs(30, seed=3000), epochs=6,
                                            on_progress=lambda fraction, _: steps.append(fraction))
    assert variants["trained_on"] == "pairs+labels" and variants["labels_train"] == 48
    assert variants["pairs+labels"] == heldout_metrics(model, _pairs(30, seed=3000))["heldout_pairwise_accuracy"]
    assert variants["pairs+labels"] >= variants["pairs"]  # 4 pairs say less than 48 labels
    assert steps == sorted(steps) and steps[-1] == 1.0
    _, alone = train_reward_variants(_pairs(4, seed=0), [], _pairs(30, seed=3000), epochs=2)
    assert alone["trained_on"] == "pairs" and "pairs+labels" not in alone
