"""Soft personalisation: re-rank candidate prompts toward what a user kept before.

A user's taste is read from their kept final prompts (at least ``min_kept`` of them, 5 by default: enough to see a
habit, far fewer than the 200 ratings a Midjourney profile needs): the mean of their prompt embeddings, and how often
each attribute value (e.g. ``lighting=warm``) appears in them. A candidate scores its cosine similarity to that mean
plus the average frequency of its values; the first candidate (the strategy's own pick) keeps its place unless
another beats it by ``margin``, so personalisation nudges and never fights the intent (candidates all honour it).

Habits are also read from what a user *does*: the attribute values they add by hand when they edit a prompt
(``blue -> red``) and the values in the prompts they keep. A value with at least ``min_evidence`` such signs and
``min_share`` of the signs for its attribute becomes that user's personal value (:func:`personal_values`), and
:func:`apply_personal_values` fills the attributes an intent leaves open with them; what the intent says always wins.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from imageloop.prompts.lexicon import Lexicon
from imageloop.prompts.usual import split_tags

__all__ = ["PersonalValue", "Taste", "apply_personal_values", "personal_values", "rerank", "taste_from_history"]

DEFAULT_MARGIN = 0.03
DEFAULT_MIN_SHARE = 0.6
# The subject is what a request is about, never a habit to add to it.
HABIT_ATTRIBUTES = ("place", "weather", "time", "lighting", "colour", "mood", "composition")


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
        counts.update(_values(prompt, lexicon))
    share = {value: count / len(prompts) for value, count in counts.items()}
    return Taste(centroid / norm if norm > 0 else centroid, share, len(prompts))


def _affinity(prompt: str, taste: Taste, lexicon: Lexicon) -> float:
    values = _values(prompt, lexicon)
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


@dataclass(frozen=True, slots=True)
class PersonalValue:
    """A value a user habitually wants for one attribute, with the signs for it and its share of them."""

    attribute: str
    key: str
    evidence: int
    share: float


def personal_values(
    kept_prompts: Sequence[str],
    edits: Sequence[tuple[str, str]],
    lexicon: Lexicon,
    *,
    min_evidence: int = 2,
    min_share: float = DEFAULT_MIN_SHARE,
) -> dict[str, PersonalValue]:
    """Attribute -> the user's habitual value, from kept final prompts and ``(before, after)`` prompt edits.

    Each kept prompt is one sign for every value it names; each edit is one sign for every value it adds and one
    sign against every value it removes. Attributes whose signs disagree (no value reaches ``min_share``) or are too
    few (under ``min_evidence``) get no value.
    """
    signs: Counter[tuple[str, str]] = Counter()
    against: Counter[tuple[str, str]] = Counter()
    for prompt in kept_prompts:
        signs.update(_values(prompt, lexicon))
    for before, after in edits:
        old, new = set(_values(before, lexicon)), set(_values(after, lexicon))
        signs.update(new - old)
        against.update(old - new)
    out: dict[str, PersonalValue] = {}
    for attribute in HABIT_ATTRIBUTES:
        counts = {key: n for (a, key), n in signs.items() if a == attribute}
        if not counts:
            continue
        total = sum(counts.values()) + sum(n for (a, _), n in against.items() if a == attribute)
        key, count = max(sorted(counts.items()), key=lambda item: item[1])
        share = count / total
        if count >= min_evidence and share >= min_share:
            out[attribute] = PersonalValue(attribute, key, count, round(share, 4))
    return out


def _values(prompt: str, lexicon: Lexicon) -> list[tuple[str, str]]:
    """The ``(attribute, key)`` values ``prompt`` names, in a stable order."""
    return [(a, k) for a, keys in lexicon.attributes_in(prompt).items() for k in sorted(keys)]


def apply_personal_values(
    prompt: str,
    values: dict[str, PersonalValue],
    *,
    stated: set[str],
    negative: str | None,
    lexicon: Lexicon,
) -> tuple[str, list[PersonalValue]]:
    """``prompt`` with each personal value set for attributes the intent did not state (``stated``).

    A value already in the prompt is left as it is; another value of that attribute (from a completion or a kept
    prompt reused from someone else) is replaced; a value the negative prompt names is never added. Returns the
    prompt and the values applied.
    """
    banned = set(_values(negative or "", lexicon))
    present = lexicon.attributes_in(prompt)
    applied = [v for attribute, v in values.items()
               if attribute not in stated and present.get(attribute) != {v.key} and (attribute, v.key) not in banned]
    if not applied:
        return prompt, []
    replaced = {v.attribute for v in applied}
    tags = [t.strip() for t in split_tags(prompt) if t.strip()]
    kept = [t for t in tags if (lexicon.value_of(t) or ("", ""))[0] not in replaced]
    added = [lexicon.canonical(v.attribute, v.key) for v in applied]
    return ", ".join([*kept, *added]), applied
