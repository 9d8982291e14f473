"""The job runner with the prompt service: intents expanded and moderated by it, every image checked and a failing
one made again with a new seed, each try recorded in the generation's timings."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from imageloop.config import Settings
from imageloop.engine.request import GenerationRequest
from imageloop.jobs import JobRunner
from imageloop.prompts.image_check import ImageChecker
from imageloop.prompts.service import PromptService
from imageloop.storage import Expansion, GenerationRecord, JobStatus, NewGeneration, Storage, UserId, WorkerId
from tests.server.kit import tiny_settings

SECOND_TRY = 1_000_003  # generate_checked's default seed step


def _png(good: bool, seed: int) -> bytes:
    if good:
        pixels = np.random.default_rng(seed).integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    else:
        pixels = np.zeros((16, 16, 3), dtype=np.uint8)  # a black frame: no contrast, no detail
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


@dataclass(frozen=True)
class FakeImage:
    png: bytes
    seed: int
    width: int = 16
    height: int = 16


@dataclass
class FakeResult:
    images: list[FakeImage]
    model_id: str = "fake"
    model_version: str = "1"
    timings: dict[str, float] = field(default_factory=lambda: {"total": 0.1})


class FakeEngine:
    """Black frames for the seeds in ``bad_seeds``, noise otherwise; records every request it ran."""

    def __init__(self, bad_seeds: set[int], nsfw_possible: bool = True) -> None:
        self.bad_seeds = bad_seeds
        self.requests: list[GenerationRequest] = []
        self.can_show_nudity = nsfw_possible

    def generate(self, request: GenerationRequest, *, on_step: Any = None) -> FakeResult:
        self.requests.append(request)
        assert request.seed is not None
        seeds = [request.seed + i for i in range(request.num_images)]
        return FakeResult([FakeImage(_png(seed not in self.bad_seeds, seed), seed) for seed in seeds])

    def generate_many(self, requests: Sequence[GenerationRequest], *, on_step: Any = None) -> list[FakeResult]:
        return [self.generate(request) for request in requests]

    def nsfw_possible(self, request: GenerationRequest) -> bool:
        return self.can_show_nudity


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return tiny_settings(tmp_path / "data", tmp_path / "no-model", prompts={"strategies": ["rules"],
                                                                           "max_quality_retries": 2})


@pytest.fixture
def prompts(settings: Settings, storage: Storage) -> PromptService:
    service = PromptService(settings, storage)
    service.image_checker = ImageChecker(quality_threshold=0.35, nsfw=False)  # the pixel score alone: fast
    return service


def run_one(storage: Storage, settings: Settings, engine: FakeEngine, prompts: PromptService, user: UserId,
            **fields: Any) -> GenerationRecord:
    created = storage.generations.create(user, NewGeneration(**fields))
    runner = JobRunner(storage, engine, settings, WorkerId("w"), lambda _event: None, prompts=prompts)
    records = storage.generations.claim(WorkerId("w"))
    assert [r.id for r in records] == [created.id]
    runner.run(records)
    return storage.generations.get_for_worker(created.id)


def test_a_failing_image_is_made_again_with_a_new_seed_and_every_try_is_recorded(
    storage: Storage, settings: Settings, prompts: PromptService, user: UserId
) -> None:
    engine = FakeEngine(bad_seeds={40})
    record = run_one(storage, settings, engine, prompts, user, prompt="a fox",
                     params={"seed": 40, "num_images": 2, "steps": 3})
    assert record.status is JobStatus.SUCCEEDED, record.error
    assert [image.seed for image in record.images] == [40 + SECOND_TRY, 41]  # only the black frame ran again
    retry = engine.requests[-1]
    assert (retry.seed, retry.num_images, retry.steps, retry.prompt) == (40 + SECOND_TRY, 1, 3, "a fox")
    checks = record.timings["image_checks"]
    assert [[t["seed"] for t in c["tries"]] for c in checks] == [[40, 40 + SECOND_TRY], [41]]
    first = checks[0]["tries"][0]
    assert first["ok"] is False and "quality" in first["reasons"][0] and first["quality"] < 0.35
    assert all(c["passed"] for c in checks)


def test_an_image_that_keeps_failing_stops_after_max_retries_and_keeps_the_last_try(
    storage: Storage, settings: Settings, prompts: PromptService, user: UserId
) -> None:
    seeds = [7, 7 + SECOND_TRY, 7 + 2 * SECOND_TRY]
    engine = FakeEngine(bad_seeds=set(seeds))
    record = run_one(storage, settings, engine, prompts, user, prompt="a fox", params={"seed": 7})
    assert record.status is JobStatus.SUCCEEDED
    assert [image.seed for image in record.images] == [seeds[-1]]
    [check] = record.timings["image_checks"]
    assert [t["seed"] for t in check["tries"]] == seeds and check["passed"] is False
    assert len(engine.requests) == 3  # the batch call, then max_quality_retries = 2


def test_the_worker_expands_and_moderates_intents_with_the_service(
    storage: Storage, settings: Settings, prompts: PromptService, user: UserId
) -> None:
    engine = FakeEngine(bad_seeds=set())
    blocked = run_one(storage, settings, engine, prompts, user, intent="p0rn", params={"seed": 1})
    assert blocked.status is JobStatus.FAILED and "blocked (sexual)" in (blocked.error or "")
    assert engine.requests == []
    fine = run_one(storage, settings, engine, prompts, user, intent="城市的雨夜", params={"seed": 1})
    assert fine.status is JobStatus.SUCCEEDED and fine.final_prompt == "city street, rain, night"
    assert fine.expander_strategy == "rules"


def test_the_worker_runs_the_expansion_stored_at_submit_and_expands_nothing(
    storage: Storage, settings: Settings, prompts: PromptService, user: UserId, monkeypatch: pytest.MonkeyPatch
) -> None:
    def expand_again(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("the worker expanded an intent that was expanded at submit")

    monkeypatch.setattr(prompts, "expand", expand_again)
    monkeypatch.setattr(prompts, "check_prompt", expand_again)
    engine = FakeEngine(bad_seeds=set())
    details = {"provenance": [{"tag": "fox", "source": "intent", "added": False}]}
    submitted = Expansion(final_prompt="fox, snow, moonlight", negative_prompt="blurry", expander_strategy="local_llm",
                          expander_version="v1", intent_language="en", details=details)
    record = run_one(storage, settings, engine, prompts, user, intent="城市的雨夜", params={"seed": 1},
                     expansion=submitted)
    assert record.status is JobStatus.SUCCEEDED, record.error
    assert [(r.prompt, r.negative_prompt) for r in engine.requests] == [("fox, snow, moonlight", "blurry")]
    assert (record.expander_strategy, record.expansion_details) == ("local_llm", details)


def test_without_the_service_images_are_not_checked(storage: Storage, settings: Settings, user: UserId) -> None:
    engine = FakeEngine(bad_seeds={3})
    created = storage.generations.create(user, NewGeneration(prompt="a fox", params={"seed": 3}))
    runner = JobRunner(storage, engine, settings, WorkerId("w"), lambda _event: None)
    runner.run(storage.generations.claim(WorkerId("w")))
    record = storage.generations.get_for_worker(created.id)
    assert [image.seed for image in record.images] == [3] and "image_checks" not in record.timings


class CountingChecker(ImageChecker):
    """The real checker with a stand-in NSFW classifier that counts its calls and finds everything unsafe."""

    def __init__(self) -> None:
        super().__init__(quality_threshold=0.35)
        self.scored = 0

    def nsfw_score(self, image: Any) -> float:
        self.scored += 1
        return 0.99


@pytest.mark.parametrize(("possible", "setting", "scored"), [(False, "auto", 0), (True, "auto", 1),
                                                             (False, "always", 1)])
def test_the_nsfw_score_runs_only_where_the_engine_says_the_images_could_show_nudity(
    storage: Storage, tmp_path: Path, user: UserId, possible: bool, setting: str, scored: int
) -> None:
    settings = tiny_settings(tmp_path / "data2", tmp_path / "no-model",
                             prompts={"strategies": ["rules"], "max_quality_retries": 0, "nsfw_check": setting})
    service = PromptService(settings, storage)
    service.image_checker = checker = CountingChecker()
    record = run_one(storage, settings, FakeEngine(set(), nsfw_possible=possible), service, user, prompt="a fox",
                     params={"seed": 5})
    assert checker.scored == scored
    if scored:  # checked and found unsafe: withheld, so the job fails as any job whose every image is withheld
        assert record.status is JobStatus.FAILED and "NSFW" in (record.error or "")
    else:  # not computed: recorded as null, the image delivered
        [check] = record.timings["image_checks"]
        assert check["tries"][0]["nsfw"] is None and record.status is JobStatus.SUCCEEDED
