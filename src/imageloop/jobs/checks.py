"""The worker's image check: every generated image is scored (NSFW, quality) and, while it fails, regenerated alone
with a new seed (:func:`imageloop.prompts.image_check.generate_checked`), up to ``prompts.max_quality_retries``.

The batch's pipeline call makes each image's first try; only failing images are run again, one at a time, with the
job's own request (its recipe, size and steps) at the new seed. Every try is returned for the generation's record.

An image whose last try still fails the NSFW check is withheld: never stored, never delivered. The job delivers the
images that passed (fewer than asked; the log marks the withheld ones), and when every image is withheld the job
fails with :class:`~imageloop.errors.ModerationError` (category ``nsfw_image``) naming the reason. An image that
fails only the quality check is still delivered (its last try): quality is a preference, safety is not.

The NSFW score is not computed (logged as null) where the engine says the images cannot show nudity
(:mod:`imageloop.engine.safety`: plain text-to-image on the embedded models), unless ``prompts.nsfw_check`` is
``always``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from imageloop.engine.request import GenerationRequest
from imageloop.errors import ModerationError
from imageloop.prompts.image_check import CheckedImage, ImageChecker, generate_checked


class CheckableImage(Protocol):
    @property
    def png(self) -> bytes: ...
    @property
    def seed(self) -> int: ...


@dataclass(frozen=True)
class CheckedImages:
    """The images to keep (in order; withheld ones left out) and a JSON-ready log of every try."""

    images: list[Any]
    log: list[dict[str, Any]]


def _try_log(index: int, checked: CheckedImage[Any], *, withheld: bool) -> dict[str, Any]:
    return {
        "index": index,
        "passed": checked.passed,
        "withheld": withheld,
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
    nsfw_possible: bool = True,
) -> CheckedImages:
    """Check each of ``images`` (made by ``request``); a failing one is made again by ``regenerate`` with a copy of
    ``request`` for one image at a new seed. Returns the kept image for each (the first that passed, else the last
    try unless it failed the NSFW check: then it is withheld) and every try. Raises ModerationError when every image
    is withheld. Errors of ``regenerate`` or the checker propagate."""
    kept: list[Any] = []
    log: list[dict[str, Any]] = []
    for index, first in enumerate(images):

        def generate(seed: int, first: CheckableImage = first) -> CheckableImage:
            if seed == first.seed:
                return first
            return regenerate(request.model_copy(update={"seed": seed, "num_images": 1}))

        checked = generate_checked(generate, lambda image: image.png, seed=first.seed, checker=checker,
                                   max_retries=max_retries, nsfw_possible=nsfw_possible)
        withheld = _unsafe(checked, checker)
        if not withheld:
            kept.append(checked.result)
        log.append(_try_log(index, checked, withheld=withheld))
    if images and not kept:
        tries = sum(len(entry["tries"]) for entry in log)
        raise ModerationError("nsfw_image", f"every image failed the NSFW check on each of its tries ({tries} in all); "
                                            "no image is delivered")
    return CheckedImages(kept, log)


def _unsafe(checked: CheckedImage[Any], checker: ImageChecker) -> bool:
    """Whether the image that would be kept failed the NSFW check."""
    nsfw = checked.tries[-1].verdict.nsfw
    return not checked.passed and nsfw is not None and nsfw >= checker.nsfw_threshold
