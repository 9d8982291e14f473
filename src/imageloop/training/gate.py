"""The eval gate: a candidate is promoted only when it beats the current version on held-out data.

Both models judge the same held-out preference pairs; each pair scores 1 when a model prefers the side people
kept, 0 when it prefers the other, 0.5 on a tie (and 0.5 always for "no model", i.e. chance). The gate looks at
the per-pair differences (a paired comparison, so the shared difficulty of each pair cancels out) and passes the
candidate when the lower end of the confidence interval of its mean gain is above zero, and never on fewer
held-out pairs than ``training.min_heldout_items``: an interval over a handful of pairs is not evidence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

from imageloop.config import TrainingSettings

__all__ = ["MIN_HELDOUT_ITEMS", "GateResult", "correctness", "evaluate_gate", "too_little_heldout"]

# The default lives in settings (one source of truth); callers with settings pass the configured value.
MIN_HELDOUT_ITEMS: int = TrainingSettings.model_fields["min_heldout_items"].default


@dataclass(frozen=True, slots=True)
class GateResult:
    """The gate's verdict and the numbers behind it (stored as the version's metrics)."""

    passed: bool
    pairs: int
    candidate_accuracy: float
    current_accuracy: float
    gain: float  # candidate - current pairwise accuracy (= win rate - 0.5, in pairs where they disagree)
    gain_low: float
    gain_high: float
    confidence: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def correctness(margins: Sequence[float]) -> list[float]:
    """Per pair: 1 when the margin (score of the kept side minus the other) is positive, 0 negative, 0.5 tied."""
    return [1.0 if m > 0 else 0.0 if m < 0 else 0.5 for m in margins]


def too_little_heldout(n: int, minimum: int) -> str | None:
    """The reason a gate cannot judge ``n`` held-out items, or None when ``n`` reaches ``minimum``."""
    return f"too little held-out data (n = {n} < {minimum})" if n < minimum else None


def evaluate_gate(
    candidate: Sequence[float], current: Sequence[float] | None, *, confidence: float,
    min_pairs: int = MIN_HELDOUT_ITEMS, metric: str = "accuracy", items: str = "pairs",
) -> GateResult:
    """Compare per-pair correctness of ``candidate`` with ``current`` (None = chance) at ``confidence``; any
    per-item score in [0, 1] works the same way (``metric`` and ``items`` name them in the reason).

    The interval is the normal approximation to the mean of the paired differences, with the variance floored
    at that of one disagreement in ``n`` pairs so that a handful of identical answers never looks certain.
    """
    if not 0.5 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0.5, 1), got {confidence}")
    n = len(candidate)
    baseline = list(current) if current is not None else [0.5] * n
    if len(baseline) != n:
        raise ValueError(f"candidate has {n} pairs, current {len(baseline)}")
    short = too_little_heldout(n, min_pairs)
    if short is not None:
        return GateResult(False, n, _mean(candidate), _mean(baseline), 0.0, -1.0, 1.0, confidence, short)
    diffs = [c - b for c, b in zip(candidate, baseline, strict=True)]
    gain = _mean(diffs)
    variance = max(sum((d - gain) ** 2 for d in diffs) / max(n - 1, 1), 1.0 / n)
    half = NormalDist().inv_cdf(0.5 + confidence / 2) * math.sqrt(variance / n)
    low, high = gain - half, gain + half
    passed = low > 0
    verdict = "beats" if passed else "does not beat"
    reason = (f"candidate {verdict} current: {metric} {_mean(candidate):.3f} vs {_mean(baseline):.3f} on {n} "
              f"held-out {items}, gain {gain:+.3f} [{low:+.3f}, {high:+.3f}] at {confidence:.0%}")
    return GateResult(passed, n, _mean(candidate), _mean(baseline), gain, low, high, confidence, reason)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0
