"""``POST /v1/images/generations``: the OpenAI Images API, so the official ``openai`` client works unchanged.

The request is queued like any other generation (so it is recorded, batched and counted) and the call waits for
its images. ``response_format="url"`` returns signed links (or the object store's presigned URLs).
"""

from __future__ import annotations

import asyncio
import base64
import re
from pathlib import Path

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from imageloop.config import EMBEDDED_MODELS
from imageloop.errors import GenerationFailed, InvalidRequestError, UnknownNameError
from imageloop.prompts.expand import expansion_record, resolve_prompt
from imageloop.server.credits import CHARGED_RESPONSES
from imageloop.server.deps import CurrentUser, ServicesDep
from imageloop.server.links import public_base_url
from imageloop.server.schemas import OpenAIImage, OpenAIImageRequest, OpenAIImagesResponse
from imageloop.server.services import Services
from imageloop.server.submit import new_generation_from, renamed
from imageloop.storage import GenerationId, GenerationRecord, ImageRecord, JobStatus, UserAccount, UserId

router = APIRouter(tags=["openai"])

_SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")
POLL_SECONDS = 2.0
PUBLIC_MODEL_NAME = "imageloop"


def served_models(services: Services) -> set[str]:
    """Names the ``model`` field accepts: 'imageloop' and the configured model's name."""
    model = services.settings.engine.model
    return {PUBLIC_MODEL_NAME, model if model in EMBEDDED_MODELS else Path(model).stem, model}


def parse_size(size: str | None) -> tuple[int | None, int | None]:
    """'512x768' -> (512, 768); None or 'auto' -> the model's default size."""
    if size is None or size == "auto":
        return None, None
    match = _SIZE.match(size)
    if match is None:
        raise InvalidRequestError("size", f"cannot read {size!r}", value=size, allowed="WIDTHxHEIGHT or auto")
    return int(match[1]), int(match[2])


def _submit(services: Services, user: UserAccount, body: OpenAIImageRequest) -> GenerationRecord:
    services.fair_use.count_request(user)  # 429 here queues nothing, so the client's retry is safe
    if body.model is not None and body.model not in served_models(services):
        raise UnknownNameError("model", body.model, served_models(services))
    # A blocked prompt is a 400 naming its category, and nothing is stored; the prompt runs as written.
    resolved = resolve_prompt(intent=None, prompt=body.prompt, service=services.prompts)
    width, height = parse_size(body.size)
    params = {"width": width, "height": height, "num_images": body.n or 1}
    try:
        request = new_generation_from(
            intent=None, intent_language=None, prompt=body.prompt, negative_prompt=None,
            params={key: value for key, value in params.items() if value is not None}, recipe=None, style=None,
            session_id=body.user, settings=services.settings, expansion=expansion_record(resolved),
        )
        [request] = services.fair_use.admit(user, [request])
    except InvalidRequestError as exc:
        field = {"params.width": "size", "params.height": "size", "n": "n"}.get(exc.field, exc.field)
        raise renamed(exc, field) from exc
    record = services.storage.generations.create(user.id, request)
    services.queue.submitted([record.id])
    return record


async def wait_until_finished(
    services: Services, user_id: UserId, generation_id: GenerationId, timeout: float
) -> GenerationRecord:
    """The record once the job is terminal. On timeout the job is cancelled and GenerationFailed raised."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    get = services.storage.generations.get
    async with services.hub.subscribe(generation_id) as events:
        while True:
            record = await run_in_threadpool(get, user_id, generation_id)
            if record.status.is_terminal:
                return record
            if loop.time() >= deadline:
                await run_in_threadpool(services.storage.generations.request_cancel, user_id, generation_id)
                services.queue.cancel_requested(generation_id)
                raise GenerationFailed(f"no image after {timeout:g} s; the generation was cancelled")
            poll_at = min(deadline, loop.time() + POLL_SECONDS)
            while (remaining := poll_at - loop.time()) > 0:
                try:
                    event = await asyncio.wait_for(events.get(), timeout=remaining)
                except TimeoutError:
                    break
                if event.is_terminal:
                    break


def _image_data(services: Services, image: ImageRecord, base_url: str, *, as_b64: bool, prompt: str) -> OpenAIImage:
    if as_b64:
        data = base64.b64encode(services.storage.blobs.get(image.blob_key)).decode("ascii")
        return OpenAIImage(b64_json=data, revised_prompt=prompt)
    url = services.storage.blobs.url(image.blob_key) or base_url + services.links.path(image.blob_key)
    return OpenAIImage(url=url, revised_prompt=prompt)


@router.post("/v1/images/generations", summary="OpenAI-compatible image generation", responses=CHARGED_RESPONSES)
async def create_images(
    body: OpenAIImageRequest, user: CurrentUser, services: ServicesDep, request: Request
) -> OpenAIImagesResponse:
    """Generate ``n`` images for ``prompt`` and wait for them. ``model``: 'imageloop' or the served model's name;
    ``size``: 'WIDTHxHEIGHT'; ``response_format``: 'url' (default) or 'b64_json'; ``user``: stored as the session."""
    record = await run_in_threadpool(_submit, services, user, body)
    record = await wait_until_finished(services, user.id, record.id, services.settings.server.wait_timeout_seconds)
    # Never a status the OpenAI client retries (409, 429, 5xx): a retry would queue the same job again.
    if record.status is JobStatus.CANCELLED:
        raise GenerationFailed("the generation was cancelled")
    if record.status is JobStatus.FAILED:
        raise GenerationFailed(f"the generation failed: {record.error}")
    base_url = public_base_url(services.settings, request)
    as_b64 = body.response_format == "b64_json"
    prompt = record.final_prompt if record.final_prompt is not None else body.prompt
    data = await run_in_threadpool(
        lambda: [_image_data(services, image, base_url, as_b64=as_b64, prompt=prompt) for image in record.images]
    )
    return OpenAIImagesResponse(created=int(record.created_at.timestamp()), data=data)
