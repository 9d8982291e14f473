"""Private LoRAs: upload 5–20 images and a trigger word; a background job trains a LoRA that only you can use."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from imageloop.server.deps import CurrentUser, RunsDep, ServicesDep
from imageloop.server.uploads import check_images_pixels
from imageloop.storage.records import RunKind
from imageloop.training.user_lora import check_upload, delete_user_lora, queue_user_lora, user_recipes

router = APIRouter(prefix="/api/v1", tags=["loras"])


class LoraJobOut(BaseModel):
    """A private-LoRA training job."""

    id: str
    name: str
    trigger: str
    images: int
    status: str = Field(description="queued, running, interrupted (resumes), succeeded or failed")
    progress: float
    message: str | None
    error: str | None
    created_at: datetime
    finished_at: datetime | None


class PrivateRecipeOut(BaseModel):
    """A trained private LoRA, usable as ``recipe`` in your generations (nobody else sees it)."""

    name: str
    description: str
    loras: list[dict[str, Any]]


class LorasOut(BaseModel):
    recipes: list[PrivateRecipeOut]
    jobs: list[LoraJobOut]


def _job_out(run: Any) -> LoraJobOut:
    return LoraJobOut(id=run.id, name=run.params.get("name", ""), trigger=run.params.get("trigger", ""),
                      images=len(run.params.get("images", [])), status=run.status.value, progress=run.progress,
                      message=run.message, error=run.error, created_at=run.created_at, finished_at=run.finished_at)


@router.post("/loras", status_code=202, summary="Train a private LoRA from your images")
async def create_lora(
    user: CurrentUser,
    services: ServicesDep,
    name: Annotated[str, Form(max_length=64, description="Recipe name for the LoRA (lowercase slug)")],
    trigger: Annotated[str, Form(max_length=32, description="The word that calls it up in a prompt")],
    images: Annotated[list[UploadFile], File(description="5 to 20 images (PNG, JPEG, WebP...)")],
) -> LoraJobOut:
    """422 naming the problem for too few or too many images, a file that is not an image, an image that is too
    big or too small (its pixels over ``server.max_image_pixels``, read before decoding), or a bad name or trigger
    word; 409 when you already have a LoRA of that name; 429 with Retry-After while ``server.max_concurrent_uploads``
    of your uploads are in progress."""
    with services.uploads.hold(user.id):
        files = [(image.filename or f"image {i}", await image.read()) for i, image in enumerate(images)]
        # Each image's size from its header first: a small file may declare a huge image that decoding would expand.
        await run_in_threadpool(check_images_pixels, files, "images", services.settings.server.max_image_pixels)
        upload = await run_in_threadpool(check_upload, services.settings, name=name, trigger=trigger, files=files)
    run = await run_in_threadpool(queue_user_lora, services.settings, services.storage, user.id, upload,
                                  stores=services.training)
    services.trainer.wake()
    return _job_out(run)


@router.get("/loras", summary="Your private LoRAs and their training jobs")
def list_loras(user: CurrentUser, services: ServicesDep, runs: RunsDep) -> LorasOut:
    recipes = [PrivateRecipeOut(name=r.name, description=r.description,
                                loras=[lora.model_dump() for lora in r.loras])
               for r in user_recipes(services.settings, user.id)]
    jobs = runs.list(RunKind.USER_LORA, user_id=user.id)
    return LorasOut(recipes=recipes, jobs=[_job_out(run) for run in jobs])


@router.delete("/loras/{name}", status_code=204, summary="Delete one of your private LoRAs")
def delete_lora(name: str, user: CurrentUser, services: ServicesDep) -> None:
    delete_user_lora(services.settings, services.storage, user.id, name, stores=services.training)
