"""Pure dataset building: from the rows of one reroll/edit chain to training examples.

A *chain* is a first generation plus every generation rerolled (``regenerate``) or edited (``edit``) from it. In a
chain, a generation is *kept* when one of its images is kept (:func:`imageloop.flywheel.actions.is_kept`), and
*rejected* when it has no kept image and the user moved on from it (it has a child in the chain) or discarded it.
The chain's *intent* is the first non-empty intent in it: what every generation in the chain was answering.

- ``sft``: (intent → final prompt) for each kept generation.
- ``dpo``: (intent, chosen = final prompt of a kept generation, rejected = final prompt of a rejected one).
- ``pairs``: image preference pairs — a kept image against a not-kept sibling (same prompt) or against an image of a
  rejected generation (caption = the intent). Which side is the kept one is decided by a hash, so position says
  nothing about preference.
- ``labels``: single images with the person's verdict (1 = kept; 0 = a sibling they did not keep, or an image of a
  generation they rerolled away from or discarded), captioned with the intent: every image that was judged is a
  label, where a pair needs a kept image and a rejected one in the same chain (Diffusion-KTO's and a pointwise
  reward model's data).
- ``recipes``: per (recipe, style), generations and kept generations, with a Wilson 95 % interval on the keep rate.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from operator import itemgetter
from typing import NamedTuple

from imageloop.flywheel.actions import ActionType, is_kept
from imageloop.storage.chains import ActionRow as ActionRow  # re-exported: the rows the builders take
from imageloop.storage.chains import Chain as Chain
from imageloop.storage.chains import GenerationRow as GenerationRow
from imageloop.storage.chains import ImageRow as ImageRow
from imageloop.storage.records import JobStatus

NO_NAME = "(none)"
WILSON_Z = 1.959963984540054  # two-sided 95 %


# Named tuples: an export makes one per row (millions); SftExample and DpoExample are in their dataset's column order.
class SftExample(NamedTuple):
    prompt: str
    completion: str
    language: str | None
    generation_id: str


class DpoExample(NamedTuple):
    prompt: str
    chosen: str
    rejected: str
    chosen_generation_id: str
    rejected_generation_id: str


class PairSpec(NamedTuple):
    """One image preference pair; the bytes are looked up by blob key when the dataset is written."""

    caption: str
    image_0: ImageRow
    image_1: ImageRow
    label_0: float
    label_1: float
    source: str  # "siblings" (same generation) or "reroll" (kept vs. an image of a rejected generation)


class LabelSpec(NamedTuple):
    """One judged image; the bytes are looked up by blob key when the dataset is written."""

    caption: str
    image: ImageRow
    label: float  # 1.0 kept, 0.0 not kept
    source: str  # "kept", "sibling" (not kept beside a kept one), "rerolled" or "discarded"


@dataclass(frozen=True, slots=True)
class RecipeStat:
    recipe: str
    style: str
    uses: int
    kept: int
    keep_rate: float
    keep_rate_low: float
    keep_rate_high: float


class ChainView(NamedTuple):
    """What the builders need to know about a chain, derived once."""

    intent: str | None
    language: str | None
    succeeded: list[GenerationRow]
    kept_images: frozenset[str]
    kept: list[GenerationRow]
    rejected: list[GenerationRow]
    images_by_generation: dict[str, list[ImageRow]]


_SUCCEEDED = JobStatus.SUCCEEDED
_DISCARD = ActionType.DISCARD
_GENERATION_AND_INDEX = itemgetter(1, 2)  # ImageRow's generation_id, index


def view(chain: Chain) -> ChainView:
    """Classify a chain's generations and images into kept and rejected.

    Kept-ness comes from the actions alone (each action names its image and that image's generation), so
    ``chain.images`` is only needed by :func:`pair_specs`.
    """
    by_image: dict[str, list[ActionType]] = {}
    generation_of: dict[str, str] = {}
    discarded: set[str] = set()
    for generation_id, image_id, kind in chain.actions:
        if image_id is not None:
            if image_id in by_image:
                by_image[image_id].append(kind)
            else:
                by_image[image_id] = [kind]
            generation_of[image_id] = generation_id
        if kind is _DISCARD:
            discarded.add(generation_id)
    kept_images = frozenset(image for image, actions in by_image.items() if is_kept(actions))
    kept_ids = {generation_of[image] for image in kept_images}
    images: dict[str, list[ImageRow]] = {}
    for image in sorted(chain.images, key=_GENERATION_AND_INDEX):
        if image.generation_id in images:
            images[image.generation_id].append(image)
        else:
            images[image.generation_id] = [image]
    parents = {row.parent_id for row in chain.generations if row.parent_id is not None}
    succeeded = [row for row in chain.generations if row.status is _SUCCEEDED and row.final_prompt]
    kept = [row for row in succeeded if row.id in kept_ids]
    rejected = [row for row in succeeded if row.id not in kept_ids and (row.id in parents or row.id in discarded)]
    first = next((row for row in chain.generations if row.intent and row.intent.strip()), None)
    return ChainView(
        intent=first.intent if first else None,
        language=first.intent_language if first else None,
        succeeded=succeeded,
        kept_images=kept_images,
        kept=kept,
        rejected=rejected,
        images_by_generation=images,
    )


def _view(chain: Chain | ChainView) -> ChainView:
    return chain if isinstance(chain, ChainView) else view(chain)


def sft_examples(chain: Chain | ChainView) -> Iterator[SftExample]:
    """(intent → final prompt) for each kept generation of the chain; one per distinct final prompt."""
    info = _view(chain)
    if info.intent is None:
        return
    seen: set[str] = set()
    for row in info.kept:
        assert row.final_prompt is not None
        if row.final_prompt not in seen:
            seen.add(row.final_prompt)
            yield SftExample(info.intent, row.final_prompt, info.language, row.id)


def dpo_examples(chain: Chain | ChainView) -> Iterator[DpoExample]:
    """(intent, chosen, rejected) for every kept × rejected generation pair with different final prompts."""
    info = _view(chain)
    if info.intent is None:
        return
    seen: set[tuple[str, str]] = set()
    for good in info.kept:
        for bad in info.rejected:
            assert good.final_prompt is not None and bad.final_prompt is not None
            key = (good.final_prompt, bad.final_prompt)
            if good.final_prompt != bad.final_prompt and key not in seen:
                seen.add(key)
                yield DpoExample(info.intent, good.final_prompt, bad.final_prompt, good.id, bad.id)


def _oriented(caption: str, kept: ImageRow, other: ImageRow, source: str) -> PairSpec:
    # Deterministic coin flip so a model cannot learn "the first image wins".
    flip = hashlib.sha256(f"{kept.id}|{other.id}".encode()).digest()[0] & 1
    if flip:
        return PairSpec(caption, other, kept, 0.0, 1.0, source)
    return PairSpec(caption, kept, other, 1.0, 0.0, source)


def pair_specs(chain: Chain | ChainView) -> Iterator[PairSpec]:
    """Image preference pairs of the chain: kept vs. not-kept siblings, and kept vs. images of rejected ones."""
    info = _view(chain)
    for row in info.kept:
        assert row.final_prompt is not None
        siblings = info.images_by_generation.get(row.id, [])
        winners = [image for image in siblings if image.id in info.kept_images]
        losers = [image for image in siblings if image.id not in info.kept_images]
        for good in winners:
            for bad in losers:
                yield _oriented(row.final_prompt, good, bad, "siblings")
            if info.intent is None:
                continue
            for rejected in info.rejected:
                for bad in info.images_by_generation.get(rejected.id, []):
                    yield _oriented(info.intent, good, bad, "reroll")


def label_specs(chain: Chain | ChainView) -> Iterator[LabelSpec]:
    """Every judged image of the chain with its verdict: kept images and their not-kept siblings, and the images of
    generations the person rerolled away from or discarded; captioned with the intent (else the final prompt)."""
    info = _view(chain)
    rejected = {row.id for row in info.rejected}
    parents = {row.parent_id for row in info.succeeded if row.parent_id is not None}
    for row in info.succeeded:
        caption = info.intent or row.final_prompt or ""
        if row in info.kept:
            for image in info.images_by_generation.get(row.id, []):
                kept = image.id in info.kept_images
                yield LabelSpec(caption, image, 1.0 if kept else 0.0, "kept" if kept else "sibling")
        elif row.id in rejected:
            source = "rerolled" if row.id in parents else "discarded"
            for image in info.images_by_generation.get(row.id, []):
                yield LabelSpec(caption, image, 0.0, source)


def wilson_interval(kept: int, uses: int, z: float = WILSON_Z) -> tuple[float, float]:
    """The Wilson score interval for a keep rate of ``kept`` out of ``uses`` (``(0, 1)`` when there are no uses)."""
    if uses <= 0:
        return 0.0, 1.0
    if not 0 <= kept <= uses:
        raise ValueError(f"kept={kept} must be between 0 and uses={uses}")
    rate = kept / uses
    denominator = 1 + z * z / uses
    centre = (rate + z * z / (2 * uses)) / denominator
    margin = z * math.sqrt(rate * (1 - rate) / uses + z * z / (4 * uses * uses)) / denominator
    # Clamped so rounding never puts the observed rate (e.g. exactly 0 or 1) outside its own interval.
    return max(0.0, min(rate, centre - margin)), min(1.0, max(rate, centre + margin))


class RecipeTally:
    """Counts uses and keeps per (recipe, style), chain by chain; ``stats()`` gives the table."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])

    def add(self, chain: Chain | ChainView) -> None:
        info = _view(chain)
        kept_ids = {row.id for row in info.kept}
        for row in info.succeeded:
            counts = self._counts[(row.recipe or NO_NAME, row.style or NO_NAME)]
            counts[0] += 1
            counts[1] += row.id in kept_ids

    def stats(self) -> list[RecipeStat]:
        """One row per (recipe, style), most used first."""
        rows = []
        for (recipe, style), (uses, kept) in self._counts.items():
            low, high = wilson_interval(kept, uses)
            rows.append(RecipeStat(recipe, style, uses, kept, kept / uses, low, high))
        return sorted(rows, key=lambda row: (-row.uses, row.recipe, row.style))


def recipe_stats(chains: Iterable[Chain]) -> list[RecipeStat]:
    """The recipe table for ``chains``."""
    tally = RecipeTally()
    for chain in chains:
        tally.add(chain)
    return tally.stats()
