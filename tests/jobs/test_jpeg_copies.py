"""The worker stores each generated image's JPEG copy beside its PNG (what the image datasets copy), and deleting a
user's data deletes the copies too."""

from __future__ import annotations

from pathlib import Path

import pytest

from imageloop.config import Settings
from imageloop.flywheel.transcode import to_jpeg
from imageloop.prompts.image_check import ImageChecker
from imageloop.prompts.service import PromptService
from imageloop.storage import JobStatus, Storage, UserId, jpeg_copy_key
from tests.jobs.test_prompt_service_worker import FakeEngine, run_one
from tests.server.kit import tiny_settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return tiny_settings(tmp_path / "data", tmp_path / "no-model", prompts={"strategies": ["rules"]})


@pytest.fixture
def prompts(settings: Settings, storage: Storage) -> PromptService:
    service = PromptService(settings, storage)
    service.image_checker = ImageChecker(quality_threshold=0.0, nsfw=False)
    return service


def test_a_generated_image_is_stored_as_png_and_as_its_jpeg_copy(
    storage: Storage, settings: Settings, prompts: PromptService, user: UserId
) -> None:
    record = run_one(storage, settings, FakeEngine(bad_seeds=set()), prompts, user, prompt="a fox",
                     params={"seed": 5, "num_images": 2, "steps": 3})
    assert record.status is JobStatus.SUCCEEDED, record.error
    assert len(record.images) == 2
    for image in record.images:
        png = storage.blobs.get(image.blob_key)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert jpeg_copy_key(image.blob_key) == image.blob_key.removesuffix(".png") + ".jpg"
        assert storage.blobs.get(jpeg_copy_key(image.blob_key)) == to_jpeg(png)  # the bytes the export would make


def test_deleting_a_users_data_deletes_the_jpeg_copies(
    storage: Storage, settings: Settings, prompts: PromptService, user: UserId
) -> None:
    record = run_one(storage, settings, FakeEngine(bad_seeds=set()), prompts, user, prompt="a fox",
                     params={"seed": 5, "steps": 3})
    [image] = record.images
    storage.users.delete_user_data(user, storage.blobs)
    assert not storage.blobs.exists(image.blob_key)
    assert not storage.blobs.exists(jpeg_copy_key(image.blob_key))
