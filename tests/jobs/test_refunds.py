"""The worker's ends of a charged generation reach the ledger: work whose every image is withheld fails and is
refunded in full; a job that delivers some images refunds the withheld ones' share."""

from __future__ import annotations

from pathlib import Path

import pytest

from imageloop.config import Settings
from imageloop.prompts.service import PromptService
from imageloop.storage import Charge, GenerationId, JobStatus, LedgerKind, Storage, UserId
from tests.jobs.test_prompt_service_worker import SECOND_TRY, run_one
from tests.jobs.test_withheld_images import RedMeansUnsafe, UnsafeEngine
from tests.server.kit import tiny_settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return tiny_settings(tmp_path / "data", tmp_path / "no-model", prompts={"strategies": ["rules"],
                                                                           "max_quality_retries": 1})


@pytest.fixture
def prompts(settings: Settings, storage: Storage) -> PromptService:
    service = PromptService(settings, storage)
    service.image_checker = RedMeansUnsafe()
    return service


def _ledger(storage: Storage, generation_id: GenerationId) -> list[tuple[LedgerKind, int]]:
    return [(entry.kind, entry.amount) for entry in storage.credits.generation_entries(generation_id)]


def test_withheld_work_is_refunded(storage: Storage, settings: Settings, prompts: PromptService, user: UserId) -> None:
    storage.credits.grant(user, 20)
    every_try = {7, 7 + SECOND_TRY}
    failed = run_one(storage, settings, UnsafeEngine(unsafe_seeds=every_try), prompts, user, prompt="a fox",
                     params={"seed": 7}, charge=Charge(cost=6))
    assert failed.status is JobStatus.FAILED
    assert _ledger(storage, failed.id) == [(LedgerKind.DEBIT, -6), (LedgerKind.REFUND, 6)]
    partly = run_one(storage, settings, UnsafeEngine(unsafe_seeds={40, 40 + SECOND_TRY}), prompts, user,
                     prompt="a fox", params={"seed": 40, "num_images": 2}, charge=Charge(cost=6))
    assert partly.status is JobStatus.SUCCEEDED and len(partly.images) == 1
    assert _ledger(storage, partly.id) == [(LedgerKind.DEBIT, -6), (LedgerKind.REFUND, 3)]
    assert storage.users.get(user).credits == 20 - 3
