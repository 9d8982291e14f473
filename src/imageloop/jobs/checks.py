"""The worker's image check: every generated image is scored (NSFW, quality) and, while it fails, regenerated alone
with a new seed (:func:`imageloop.prompts.image_check.generate_checked`), up to ``prompts.max_quality_retries``.

The batch's pipeline call makes each image's first try; only failing images are run again, one at a time, with the
job's own request (its recipe, size and steps) at the new seed. Every try is returned for the generation's record.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from imageloop.engine.request import GenerationRequest
from imageloop.prompts.image_check import CheckedImage, ImageChecker, generate_checked


class CheckableImage(Protocol):
    @property
    def png(self) -> bytes: ...
    @property
    def seed(self) -> int: ...


@dataclass(frozen=True)
class CheckedImages:
    """The images to keep (one per generated image, in order) and a JSON-ready log of every try."""

    images: list[Any]
    log: list[dict[str, Any]]


def _try_log(index: int, checked: CheckedImage[Any]) -> dict[str, Any]:
    return {
        "index": index,
        "passed": checked.passed,
        "tries": [
            {"seed": attempt.seed, "nsfw": attempt.verdict.nsfw, "quality": attempt.verdict.quality,
             "ok": attempt.verdict.ok, "reasons": list(attempt.verdict.reasons)}
            for attempt in checked.tries
        ],
    }


def check_images(
    images: Sequence[CheckableImage],
    request: GenerationRequest,
    regenerate: Callable[[GenerationRequest], CheckableImage],
    *,
    checker: ImageChecker,
    max_retries: int,
) -> CheckedImages:
    """Check each of ``images`` (made by ``request``); a failing one is made again by ``regenerate`` with a copy of
    ``request`` for one image at a new seed. Returns the kept image for each (the first that passed, else the last
    try) and every try. Errors of ``regenerate`` or the checker propagate."""
    kept: list[Any] = []
    log: list[dict[str, Any]] = []
    for index, first in enumerate(images):

        def generate(seed: int, first: CheckableImage = first) -> CheckableImage:
            if seed == first.seed:
                return first
            return regenerate(request.model_copy(update={"seed": seed, "num_images": 1}))

        checked = generate_checked(generate, lambda image: image.png, seed=first.seed, checker=checker,
                                   max_retries=max_retries)
        kept.append(checked.result)
        log.append(_try_log(index, checked))
    return CheckedImages(kept, log)
