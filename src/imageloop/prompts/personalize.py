"""Soft personalisation: re-rank candidate prompts toward what a user kept before.

A user's taste is read from their kept final prompts (at least ``min_kept`` of them, 5 by default: enough to see a
habit, far fewer than the 200 ratings a Midjourney profile needs): the mean of their prompt embeddings, and how often
each attribute value (e.g. ``lighting=warm``) appears in them. A candidate scores its cosine similarity to that mean
plus the average frequency of its values; the first candidate (the strategy's own pick) keeps its place unless
another beats it by ``margin``, so personalisation nudges and never fights the intent (candidates all honour it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from imageloop.prompts.lexicon import Lexicon

__all__ = ["Taste", "rerank", "taste_from_history"]

DEFAULT_MARGIN = 0.03


@dataclass(frozen=True, slots=True)
class Taste:
    """A user's taste: the unit mean of their kept prompt embeddings and the share of kept prompts per value."""

    centroid: NDArray[np.float32]
    value_share: dict[tuple[str, str], float]
    kept: int


@dataclass(frozen=True, slots=True)
class Ranked:
    prompt: str
    score: float
    similarity: float
    affinity: float


def taste_from_history(
    prompts: Sequence[str], vectors: NDArray[np.float32], lexicon: Lexicon, *, min_kept: int = 5
) -> Taste | None:
    """The taste shown by ``prompts`` (kept final prompts) and their embeddings; None under ``min_kept``."""
    if len(prompts) < min_kept or vectors.shape[0] < min_kept:
        return None
    centroid = vectors.mean(axis=0)
    norm = float(np.linalg.norm(centroid))
    counts: Counter[tuple[str, str]] = Counter()
    for prompt in prompts:
        for attribute, keys in lexicon.attributes_in(prompt).items():
            counts.update((attribute, key) for key in keys)
    share = {value: count / len(prompts) for value, count in counts.items()}
    return Taste(centroid / norm if norm > 0 else centroid, share, len(prompts))


def _affinity(prompt: str, taste: Taste, lexicon: Lexicon) -> float:
    values = [(a, k) for a, keys in lexicon.attributes_in(prompt).items() for k in keys]
    return sum(taste.value_share.get(v, 0.0) for v in values) / max(len(values), 1)


def rerank(
    candidates: Sequence[str],
    vectors: NDArray[np.float32],
    taste: Taste,
    lexicon: Lexicon,
    *,
    margin: float = DEFAULT_MARGIN,
) -> list[Ranked]:
    """``candidates`` (first = the strategy's pick) ordered by fit to ``taste``, best first.

    ``vectors`` are the candidates' embeddings, row by row. The pick stays first unless beaten by ``margin``.
    """
    scored = []
    for index, prompt in enumerate(candidates):
        similarity = float(vectors[index] @ taste.centroid)
        affinity = _affinity(prompt, taste, lexicon)
        bonus = margin if index == 0 else 0.0
        scored.append(Ranked(prompt, similarity + affinity + bonus, similarity, affinity))
    return sorted(scored, key=lambda r: -r.score)
