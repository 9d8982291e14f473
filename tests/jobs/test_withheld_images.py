"""An image that fails the NSFW check on every try is withheld: never stored or delivered. The job delivers the images
that passed; when none did, it fails with a reason that says so."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imageloop.config import Settings
from imageloop.prompts.image_check import ImageChecker, ImageLike
from imageloop.prompts.service import PromptService
from imageloop.storage import JobStatus, Storage, UserId
from tests.jobs.test_prompt_service_worker import SECOND_TRY, FakeEngine, run_one
from tests.server.kit import tiny_settings


class RedMeansUnsafe(ImageChecker):
    """The pixel quality score, and an NSFW score of 0.99 for a mostly red picture (the fake engine's 'unsafe')."""

    def __init__(self) -> None:
        super().__init__(quality_threshold=0.35, nsfw_threshold=0.8, nsfw=True)

    def nsfw_score(self, image: ImageLike) -> float:
        pixels = np.asarray(Image.open(io.BytesIO(image)) if isinstance(image, bytes) else image, dtype=np.float64)
        red, green = pixels[..., 0].mean(), pixels[..., 1].mean()
        return 0.99 if red > green + 60 else 0.01


class UnsafeEngine(FakeEngine):
    """Noise for every seed; a red picture for the seeds in ``unsafe_seeds``."""

    def __init__(self, unsafe_seeds: set[int]) -> None:
        super().__init__(bad_seeds=set())
        self.unsafe_seeds = unsafe_seeds

    def generate(self, request, *, on_step=None):  # type: ignore[no-untyped-def]
        result = super().generate(request, on_step=on_step)
        for index, image in enumerate(result.images):
            if image.seed in self.unsafe_seeds:
                pixels = np.random.default_rng(image.seed).integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
                pixels[..., 0] = 250
                pixels[..., 1] //= 4
                out = io.BytesIO()
                Image.fromarray(pixels).save(out, format="PNG")
                result.images[index] = type(image)(out.getvalue(), image.seed)
        return result


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return tiny_settings(tmp_path / "data", tmp_path / "no-model", prompts={"strategies": ["rules"],
                                                                           "max_quality_retries": 2})


@pytest.fixture
def prompts(settings: Settings, storage: Storage) -> PromptService:
    service = PromptService(settings, storage)
    service.image_checker = RedMeansUnsafe()
    return service


def _every_try(seed: int) -> set[int]:
    return {seed, seed + SECOND_TRY, seed + 2 * SECOND_TRY}  # max_quality_retries = 2 in the settings fixture


def test_an_image_unsafe_on_every_try_fails_the_job_and_nothing_is_stored(
    storage: Storage, settings: Settings, prompts: PromptService, user: UserId
) -> None:
    engine = UnsafeEngine(unsafe_seeds=_every_try(7))
    record = run_one(storage, settings, engine, prompts, user, prompt="a fox", params={"seed": 7})
    assert record.status is JobStatus.FAILED
    assert record.error is not None and "nsfw_image" in record.error and "NSFW check" in record.error
    assert not record.images
    assert len(engine.requests) == 3  # it was retried before being withheld


def test_the_images_that_passed_are_delivered_and_the_unsafe_one_is_withheld(
    storage: Storage, settings: Settings, prompts: PromptService, user: UserId
) -> None:
    engine = UnsafeEngine(unsafe_seeds=_every_try(40))
    record = run_one(storage, settings, engine, prompts, user, prompt="a fox",
                     params={"seed": 40, "num_images": 2, "steps": 3})
    assert record.status is JobStatus.SUCCEEDED, record.error
    assert [image.seed for image in record.images] == [41]
    checks = record.timings["image_checks"]
    assert [(c["index"], c["passed"], c["withheld"]) for c in checks] == [(0, False, True), (1, True, False)]
    assert all("nsfw" in t["reasons"][0] for t in checks[0]["tries"])


def test_an_unsafe_first_try_that_passes_on_a_retry_is_delivered(
    storage: Storage, settings: Settings, prompts: PromptService, user: UserId
) -> None:
    engine = UnsafeEngine(unsafe_seeds={9})
    record = run_one(storage, settings, engine, prompts, user, prompt="a fox", params={"seed": 9})
    assert record.status is JobStatus.SUCCEEDED
    assert [image.seed for image in record.images] == [9 + SECOND_TRY]
