"""Generations: submit (one or a batch), read, stream progress (SSE), cancel; and the user's history."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Annotated

from fastapi import APIRouter, File, Form, Path, Query, UploadFile
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from imageloop.engine.pngmeta import png_parameters_text
from imageloop.engine.request_notes import request_notes
from imageloop.errors import InvalidRequestError
from imageloop.jobs import JobCancelled, JobEvent
from imageloop.server.credits import CHARGED_RESPONSES
from imageloop.server.deps import CurrentUser, ServicesDep
from imageloop.server.intents import PreparedRequest, prepare_request
from imageloop.server.model_notes import record_notes
from imageloop.server.schemas import (
    MAX_ID,
    MAX_TEXT,
    GenerationAccepted,
    GenerationBatchAccepted,
    GenerationBatchCreate,
    GenerationCreate,
    GenerationOut,
    HistoryOut,
    QuoteOut,
    generation_out,
)
from imageloop.server.services import Services
from imageloop.server.submit import new_generation, renamed, with_parameters_text
from imageloop.storage import GenerationId, GenerationRecord, JobStatus, NewGeneration, UserAccount

router = APIRouter(prefix="/api/v1", tags=["generations"])

GenerationIdPath = Annotated[str, Path(min_length=1, max_length=MAX_ID, description="A generation id.")]
# While streaming, the database is read this often in case an event was missed (another server's worker...).
SSE_POLL_SECONDS = 2.0
# The largest PNG POST /api/v1/generations/from-png takes (only its text chunk is read, never its pixels).
FROM_PNG_MAX_BYTES = 32 << 20


def view(services: Services, record: GenerationRecord) -> GenerationOut:
    """The API view of ``record`` with its queue position and the freshest progress known."""
    position = services.storage.generations.queue_position(record.id) if record.status is JobStatus.QUEUED else None
    return generation_out(record, queue_position=position, live=services.progress.get(record.id),
                          notes=record_notes(services.served_model, record))


def _accepted(services: Services, record: GenerationRecord, ignored: list[str] | None = None) -> GenerationAccepted:
    position = services.storage.generations.queue_position(record.id)
    return GenerationAccepted(id=record.id, status=record.status, queue_position=position, ignored=ignored or [],
                              notes=record_notes(services.served_model, record))


def _prepared(services: Services, user: UserAccount, body: GenerationCreate) -> tuple[NewGeneration, PreparedRequest]:
    """Read ``body``'s pasted parameters, moderate it, resolve its prompt once and complete it with the prompt
    service ("the usual", a recipe choice: not for pasted parameters, which run as written), then validate it."""
    pasted = body.parameters_text is not None
    body, ignored = with_parameters_text(body, services.settings)
    prepared = prepare_request(body, services.prompts, services.settings, user.id, services.storage.previews,
                               choose_recipe=not pasted)
    prepared = replace(prepared, ignored=ignored)
    return new_generation(prepared.body, services.settings, user.id, expansion=prepared.expansion), prepared


def _log_recipe_choice(
    services: Services, user: UserAccount, record: GenerationRecord, prepared: PreparedRequest
) -> None:
    if prepared.recipe_choice is not None:
        services.prompts.record_recipe_choice(record.id, user.id, prepared.recipe_choice)


@router.post("/generations", status_code=202, summary="Queue a generation", responses=CHARGED_RESPONSES)
def create_generation(body: GenerationCreate, user: CurrentUser, services: ServicesDep) -> GenerationAccepted:
    """Store a queued generation with its prompt (expanded here, once, or the preview ``expansion_id`` names) and
    wake the workers; 202 with its id, status and queue position. A blocked intent or prompt is a 400 naming its
    category; "the usual" fills the params, recipe and style left open. While models load at start-up the job
    waits in the queue. With credits on: 402 when the balance does not cover its cost, 429 over the tier's request
    rate or queued jobs (both with Retry-After), 422 naming the field over a tier limit."""
    services.fair_use.count_request(user)
    request, prepared = _prepared(services, user, body)
    [request] = services.fair_use.admit(user, [request])
    record = services.storage.generations.create(user.id, request)
    _log_recipe_choice(services, user, record, prepared)
    services.queue.submitted([record.id])
    return _accepted(services, record, prepared.ignored)


@router.post("/generations/from-png", status_code=202, summary="Queue a generation with the parameters of a PNG",
             responses=CHARGED_RESPONSES)
async def create_generation_from_png(
    png: Annotated[UploadFile, File(description="A PNG written by AUTOMATIC1111, Forge, Civitai or Imageloop, "
                                                "carrying its `parameters` text.")],
    user: CurrentUser,
    services: ServicesDep,
    n: Annotated[int, Form(ge=1, le=64, description="Images to generate (image i uses seed + i).")] = 1,
) -> GenerationAccepted:
    """As ``POST /api/v1/generations`` with the PNG's ``parameters`` text as ``parameters_text``: the same settings,
    and ``ignored`` listing each one not honoured. 422 naming ``png`` when it is not a PNG or has no such text."""
    with services.uploads.hold(user.id):
        text = png_parameters_text(await png.read())  # the header and text chunks only: no pixel is decoded
    if len(text) > MAX_TEXT:
        raise InvalidRequestError("png", f"its parameters text has {len(text)} characters", allowed=f"<= {MAX_TEXT}")
    body = GenerationCreate(parameters_text=text, n=n)
    return await run_in_threadpool(create_generation, body, user, services)


@router.post("/generations/quote", summary="What a generation would cost, before submitting it")
def quote_generation(body: GenerationCreate, user: CurrentUser, services: ServicesDep) -> QuoteOut:
    """The credits the generation in ``body`` would cost (``n`` times the cost of one image from its size and
    steps; see the README's cost model), the balance, whether it covers the cost and which tier limit, if any, the
    request is over. Nothing is charged, queued or counted against the request rate. A ``parameters_text`` is read
    as the submit reads it."""
    body, ignored = with_parameters_text(body, services.settings)
    params = body.params.model_dump(exclude_none=True)
    params["num_images"] = body.n
    quote = services.fair_use.quote(user, params)
    return QuoteOut(
        cost=quote.cost, per_image=quote.per_image, n=quote.n, tier=quote.tier, charged=quote.charged,
        balance=quote.balance, next_refill_at=quote.next_refill_at, affordable=quote.affordable,
        problem=quote.problem, ignored=ignored, notes=request_notes(services.served_model.knows, params),
    )


@router.post("/generations/batch", status_code=202, summary="Queue several generations", responses=CHARGED_RESPONSES)
def create_generations(
    body: GenerationBatchCreate, user: CurrentUser, services: ServicesDep
) -> GenerationBatchAccepted:
    """Store several queued generations together (all or none); compatible ones run in one pipeline call. The
    batch counts as one request against the tier's rate; its cost is the sum of its items'."""
    services.fair_use.count_request(user)
    limit = services.settings.server.max_batch_requests
    if len(body.generations) > limit:
        raise InvalidRequestError("generations", f"{len(body.generations)} is too many", allowed=f"1..{limit}")
    requests, prepared = [], []
    for index, item in enumerate(body.generations):
        try:
            request, ready = _prepared(services, user, item)
        except InvalidRequestError as exc:
            raise renamed(exc, f"generations.{index}.{exc.field}") from exc
        requests.append(request)
        prepared.append(ready)
    requests = services.fair_use.admit(user, requests, fields=[f"generations.{i}." for i in range(len(requests))])
    records = services.storage.generations.create_many(user.id, requests)
    for record, ready in zip(records, prepared, strict=True):
        _log_recipe_choice(services, user, record, ready)
    services.queue.submitted([record.id for record in records])
    return GenerationBatchAccepted(generations=[_accepted(services, record, ready.ignored)
                                                for record, ready in zip(records, prepared, strict=True)])


@router.get("/generations/{generation_id}", summary="A generation: status, progress, final prompt, images")
def get_generation(generation_id: GenerationIdPath, user: CurrentUser, services: ServicesDep) -> GenerationOut:
    return view(services, services.storage.generations.get(user.id, GenerationId(generation_id)))


@router.post("/generations/{generation_id}/cancel", summary="Cancel a generation")
def cancel_generation(generation_id: GenerationIdPath, user: CurrentUser, services: ServicesDep) -> GenerationOut:
    """A queued job is cancelled at once; a running one stops after its current step. A finished one is
    returned unchanged. An administrator may cancel any user's job; anyone else gets 404 for a job not theirs."""
    owner = None if user.is_admin else user.id
    record = services.storage.generations.request_cancel(owner, GenerationId(generation_id))
    services.queue.cancel_requested(record.id)
    if record.status is JobStatus.CANCELLED:
        services.hub.publish(JobCancelled(record.id))
    return view(services, record)


def _sse(event: str, data: object) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n"


async def _event_stream(services: Services, user: UserAccount, generation_id: GenerationId) -> AsyncIterator[str]:
    """A ``status`` snapshot, then ``started``/``progress`` events as they happen, then a final ``status``."""

    def snapshot() -> GenerationOut:
        return view(services, services.storage.generations.get(user.id, generation_id))

    async with services.hub.subscribe(generation_id) as queue:
        # Read after subscribing, so an event between the read and the subscription cannot be missed.
        state = await run_in_threadpool(snapshot)
        yield _sse("status", state.model_dump(mode="json"))
        while not state.status.is_terminal:
            try:
                event: JobEvent | None = await asyncio.wait_for(queue.get(), timeout=SSE_POLL_SECONDS)
            except TimeoutError:
                event = None
            if event is not None and not event.is_terminal:
                yield _sse(event.kind, event.to_dict())
                continue
            state = await run_in_threadpool(snapshot)
            if state.status.is_terminal:
                yield _sse("status", state.model_dump(mode="json"))
            elif event is None:
                yield ": keep-alive\n\n"


@router.get(
    "/generations/{generation_id}/events",
    summary="Progress as server-sent events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "status, started, progress, queued events"}},
)
def generation_events(generation_id: GenerationIdPath, user: CurrentUser, services: ServicesDep) -> StreamingResponse:
    """Stream the job's progress: ``status`` (a full snapshot, first and last), ``started`` and ``progress``
    (``step``/``total``), and ``queued`` (with a ``reason``) when a worker gives the job back or its lease
    expires. The stream ends when the job finishes, fails or is cancelled."""
    services.storage.generations.get(user.id, GenerationId(generation_id))  # 404 before the stream starts
    return StreamingResponse(
        _event_stream(services, user, GenerationId(generation_id)), media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/history", summary="The user's generations, newest first", tags=["history"])
def history(
    user: CurrentUser,
    services: ServicesDep,
    cursor: Annotated[str | None, Query(max_length=512, description="next_cursor of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> HistoryOut:
    page = services.storage.generations.history(user.id, cursor=cursor or None, limit=limit)
    return HistoryOut(items=[view(services, record) for record in page.items], next_cursor=page.next_cursor)
