"""A failed generation's stored error (shown to its user) names files, never the server's paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from imageloop.config import Settings
from imageloop.engine.request import GenerationRequest
from imageloop.errors import RecipeError
from imageloop.prompts.service import PromptService
from imageloop.storage import JobStatus, Storage, UserId
from tests.jobs.test_prompt_service_worker import FakeEngine, run_one
from tests.server.kit import tiny_settings

LORA = "/srv/imageloop-data/loras/ada/portrait.safetensors"


class BrokenLoraEngine(FakeEngine):
    def generate(self, request: GenerationRequest, *, on_step: Any = None) -> Any:
        raise RecipeError(f"LoRA {LORA}: cannot be loaded into this pipeline")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return tiny_settings(tmp_path / "data", tmp_path / "no-model", prompts={"strategies": ["rules"]})


def test_a_failed_generation_stores_the_file_name_not_its_path(
    storage: Storage, settings: Settings, user: UserId
) -> None:
    record = run_one(storage, settings, BrokenLoraEngine(set()), PromptService(settings, storage), user,
                     prompt="a fox", params={"seed": 1})
    assert record.status is JobStatus.FAILED
    assert record.error == "LoRA portrait.safetensors: cannot be loaded into this pipeline"
