"""Admin routes of the self-training loop: start a cycle, follow training runs, list the model registry, promote
and roll back versions. Every route answers 403 to users who are not admins."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from imageloop.errors import PermissionDeniedError
from imageloop.server.deps import CurrentUser, CycleLockDep, RegistryDep, RunsDep, ServicesDep, TrainerDep
from imageloop.server.schemas import ModelVersionOut, TrainingRunOut
from imageloop.storage import UserAccount
from imageloop.storage.records import ModelKind, RunKind

router = APIRouter(prefix="/api/v1/admin", tags=["training"])


class CyclesOut(BaseModel):
    runs: list[TrainingRunOut]
    running: str | None = Field(description="Id of the cycle holding the lock, if one is running")
    next_scheduled: datetime | None = Field(description="When the next scheduled cycle is due (UTC)")
    schedule: str


def _admin(user: CurrentUser) -> UserAccount:
    if not user.is_admin:
        raise PermissionDeniedError("training and the model registry are for administrators")
    return user


AdminUser = Annotated[UserAccount, Depends(_admin)]


def _run_out(run: Any) -> TrainingRunOut:
    return TrainingRunOut.model_validate(run.to_dict())


def _version_out(version: Any) -> ModelVersionOut:
    return ModelVersionOut.model_validate(version.to_dict())


@router.post("/training/cycles", status_code=202, summary="Start a training cycle now")
def start_cycle(user: AdminUser, trainer: TrainerDep) -> TrainingRunOut:
    """Queues a cycle for the server's training worker (or returns the one already queued or running); follow
    it with ``GET /api/v1/admin/training/cycles/{id}``."""
    run = trainer.cycle.request(trigger="api")
    trainer.wake()
    return _run_out(run)


@router.get("/training/cycles", summary="Training cycles, newest first")
def list_cycles(
    user: AdminUser, services: ServicesDep, runs: RunsDep, lock: CycleLockDep, trainer: TrainerDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> CyclesOut:
    holder = lock.holder()
    return CyclesOut(runs=[_run_out(r) for r in runs.list(RunKind.CYCLE, limit=limit)],
                     running=holder[1] if holder else None, next_scheduled=trainer.next_scheduled(),
                     schedule=services.settings.training.schedule)


@router.get("/training/cycles/{run_id}", summary="One training cycle with its progress")
def get_cycle(run_id: str, user: AdminUser, runs: RunsDep) -> TrainingRunOut:
    return _run_out(runs.get(run_id))


@router.get("/models", summary="The model registry, newest first")
def list_models(
    user: AdminUser, registry: RegistryDep,
    kind: Annotated[ModelKind | None, Query(description="expander, reward, diffusion_dpo or lora")] = None,
) -> list[ModelVersionOut]:
    """Public versions (private LoRAs are listed to their owners under ``/api/v1/loras``)."""
    return [_version_out(v) for v in registry.list(kind)]


@router.get("/models/{version_id}", summary="One model version")
def get_model(version_id: str, user: AdminUser, registry: RegistryDep) -> ModelVersionOut:
    return _version_out(registry.get(version_id))


@router.post("/models/{version_id}/promote", summary="Promote a version to serve all traffic")
async def promote_model(version_id: str, user: AdminUser, registry: RegistryDep) -> ModelVersionOut:
    """The previous current version of the kind is retired. 409 when it is already promoted."""
    version = await run_in_threadpool(registry.promote, version_id, note=f"promoted by {user.name}")
    return _version_out(version)


@router.post("/models/{version_id}/rollback", summary="Roll a version back")
async def rollback_model(version_id: str, user: AdminUser, registry: RegistryDep) -> ModelVersionOut:
    """An A/B candidate stops serving; the current version is replaced by the one it replaced. 409 for versions
    that serve nothing."""
    version = await run_in_threadpool(registry.rollback, version_id, note=f"rolled back by {user.name}")
    return _version_out(version)
