"""The JSON shapes of the API: request bodies (unknown fields rejected, every string bounded) and responses."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from imageloop.engine.recipes import MAX_LORA_WEIGHT, MAX_LORAS_PER_RECIPE
from imageloop.engine.request import (
    MAX_CLIP_SKIP,
    MAX_HIRES_SCALE,
    MAX_SEED,
    MAX_SIDE,
    MIN_SIDE,
    base64_image_bytes,
)
from imageloop.storage import (
    ActionRecord,
    ActionType,
    GenerationRecord,
    ImageRecord,
    JobStatus,
    LedgerEntry,
    LedgerKind,
    UserAccount,
)

MAX_TEXT = 10_000
MAX_EDIT_PROMPT = 4_000  # an edit's character diff is quadratic in the prompt length
MAX_NAME = 128
MAX_ID = 64


class StrictBody(BaseModel):
    """Base of request bodies: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class LibraryLora(StrictBody):
    """A LoRA of the server's LoRA library by name (its file name in loras/, the suffix may be left off)."""

    file: str = Field(min_length=1, max_length=200, pattern=r"^[^/\\]", description="Name in the LoRA library.")
    weight: float = Field(default=1.0, ge=-MAX_LORA_WEIGHT, le=MAX_LORA_WEIGHT)


class GenerationParams(StrictBody):
    """Sampling parameters; a missing one comes from the recipe, then the model's defaults."""

    steps: int | None = Field(default=None, ge=1, le=1000, description="Denoising steps.")
    guidance_scale: float | None = Field(default=None, ge=0.0, le=30.0, description="CFG scale.")
    seed: int | None = Field(default=None, ge=-1, le=MAX_SEED, description="None or -1: random (and recorded).")
    width: int | None = Field(default=None, ge=MIN_SIDE, le=MAX_SIDE, multiple_of=8, description="Pixels.")
    height: int | None = Field(default=None, ge=MIN_SIDE, le=MAX_SIDE, multiple_of=8, description="Pixels.")
    scheduler: str | None = Field(default=None, min_length=1, max_length=64, description="A1111 sampler name.")
    clip_skip: int | None = Field(default=None, ge=1, le=MAX_CLIP_SKIP, description="A1111 Clip skip (SD1.x).")
    hires_scale: float | None = Field(default=None, gt=1.0, le=MAX_HIRES_SCALE,
                                      description="Hires fix: upscale by this factor and denoise again.")
    hires_steps: int | None = Field(default=None, ge=1, le=1000, description="Hires fix steps (default: steps).")
    hires_strength: float | None = Field(default=None, gt=0.0, le=1.0,
                                         description="Hires fix denoising strength (default 0.7).")
    loras: list[LibraryLora] | None = Field(default=None, max_length=MAX_LORAS_PER_RECIPE,
                                            description="LoRAs of the server's LoRA library, added to the recipe's.")
    ip_image: str | None = Field(
        default=None, min_length=1,
        description="IP-Adapter reference image: base64 of PNG/JPEG/WebP bytes (a data: URL too), within the body "
        "limit and server.max_image_pixels; needs engine.ip_adapter. Responses show its SHA-256 instead.")
    ip_scale: float | None = Field(default=None, ge=0.0, le=2.0,
                                   description="How strongly the reference image steers (default 0.6).")


class GenerationCreate(StrictBody):
    """One generation: an intent (free text, any language) and/or an explicit prompt."""

    intent: str | None = Field(default=None, max_length=MAX_TEXT, description="What the user wants, in their words.")
    intent_language: str | None = Field(default=None, min_length=1, max_length=16, description="BCP 47 tag.")
    prompt: str | None = Field(default=None, max_length=MAX_TEXT, description="Explicit prompt; wins over intent.")
    negative_prompt: str | None = Field(default=None, max_length=MAX_TEXT, description="What to avoid.")
    params: GenerationParams = Field(default_factory=GenerationParams)
    parameters_text: str | None = Field(
        default=None, min_length=1, max_length=MAX_TEXT,
        description="Generation parameters as pasted from AUTOMATIC1111, Forge or Civitai (prompt, 'Negative "
        "prompt:' line, settings line): <lora:name:weight> tags, embeddings, clip skip, sampler and schedule type, "
        "hires fix. Fields given beside it win; what cannot be honoured is listed in the response's `ignored`.")
    recipe: str | None = Field(default=None, min_length=1, max_length=MAX_NAME, description="Recipe name.")
    style: str | None = Field(default=None, min_length=1, max_length=MAX_NAME, description="Style preset name.")
    n: int = Field(default=1, ge=1, le=64, description="Images to generate (image i uses seed + i).")
    session_id: str | None = Field(default=None, min_length=1, max_length=MAX_ID, description="Client session.")
    expansion_id: str | None = Field(
        default=None, min_length=1, max_length=MAX_ID,
        description="Run the expanded prompt POST /api/v1/prompts/expand returned, exactly as shown (not expanded or "
        "moderated again). It must be yours and unexpired; the intent may be left out. An edited preview is sent as "
        "`prompt` instead.",
    )


class GenerationBatchCreate(StrictBody):
    """Several generations, stored together (all or none)."""

    generations: list[GenerationCreate] = Field(min_length=1, max_length=1000)


class GenerationAccepted(BaseModel):
    id: str
    status: JobStatus
    queue_position: int | None
    ignored: list[str] = Field(
        default_factory=list, description="Settings of `parameters_text` not honoured (or only approximately), "
        "each as 'Name: value — why'.")
    notes: list[str] = Field(
        default_factory=list, description="What the served model makes of this request, when it knows only some "
        "subjects and attributes (the embedded model): a size other than the one it was trained at, scene attributes "
        "the prompt leaves to chance. Never a refusal.")


class GenerationBatchAccepted(BaseModel):
    generations: list[GenerationAccepted]


class Progress(BaseModel):
    step: int
    total: int


class ImageOut(BaseModel):
    id: str
    index: int
    seed: int
    width: int
    height: int
    sha256: str
    url: str = Field(description="Where to GET the PNG (authenticated).")


DETAILS_DESCRIPTION = (
    "Why the prompt reads as it does, from the expander (JSON, at most 16,000 characters; {} before expansion). "
    "`provenance`: one {tag, source, added} per word of the final prompt, `source` one of intent, translation, "
    "rules, retrieval, local_llm, remote_llm, memory, personal_value, style, `added` true for words the person did "
    "not write; `personal_values`: the habits applied; `attempts`: what each strategy did."
)


class GenerationOut(BaseModel):
    """A generation: the request, how it was expanded and run, its job state and its images."""

    id: str
    status: JobStatus
    queue_position: int | None
    progress: Progress
    intent: str | None
    intent_language: str | None
    prompt: str | None
    final_prompt: str | None
    negative_prompt: str | None
    params: dict[str, Any]
    recipe: str | None
    style: str | None
    session_id: str | None
    parent_id: str | None
    chain_id: str
    expander_strategy: str | None
    expander_version: str | None
    details: dict[str, Any] = Field(default_factory=dict, description=DETAILS_DESCRIPTION)
    base_model_id: str | None
    base_model_version: str | None
    attempts: int
    error: str | None
    timings: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    images: list[ImageOut]
    notes: list[str] = Field(
        default_factory=list, description="What the served model makes of this request, when it knows only some "
        "subjects and attributes (the embedded model): a size other than the one it was trained at, scene attributes "
        "the prompt leaves to chance. Never a refusal.")


class HistoryOut(BaseModel):
    items: list[GenerationOut]
    next_cursor: str | None


class ActionCreate(StrictBody):
    """A user action on an image (or a generation). The same ``client_event_id`` twice records one action."""

    type: ActionType
    client_event_id: str = Field(min_length=1, max_length=128, description="Client-made id; retries reuse it.")
    image_id: str | None = Field(default=None, min_length=1, max_length=MAX_ID)
    generation_id: str | None = Field(default=None, min_length=1, max_length=MAX_ID)
    prompt: str | None = Field(
        default=None, min_length=1, max_length=MAX_EDIT_PROMPT, description="edit only: the edited prompt."
    )


class EditOut(BaseModel):
    prompt_before: str
    prompt_after: str
    char_distance: int
    token_distance: int
    token_changes: list[dict[str, str]]


class ActionOut(BaseModel):
    id: str
    type: ActionType
    client_event_id: str
    image_id: str | None
    generation_id: str
    child_generation_id: str | None
    created: bool = Field(description="False when this client_event_id was recorded before.")
    edit: EditOut | None
    created_at: datetime


class QuoteOut(BaseModel):
    """What a generation would cost now (``POST /api/v1/generations/quote``); nothing is charged."""

    cost: int = Field(description="Credits the generation costs: n * per_image.")
    per_image: int = Field(description="Credits one image costs (from its pixels and steps).")
    n: int
    tier: str
    charged: bool = Field(description="False when credits are off or the tier is unlimited: nothing is debited.")
    balance: int
    next_refill_at: datetime | None = Field(description="When the tier's allowance is next topped up.")
    affordable: bool = Field(description="Whether the balance covers the cost (always, when not charged).")
    problem: str | None = Field(description="The tier limit the request is over (the submit would answer 422).")
    ignored: list[str] = Field(
        default_factory=list, description="Settings of `parameters_text` the submit would not honour (as there).")
    notes: list[str] = Field(
        default_factory=list, description="A size other than the only one the served model was trained at (the "
        "embedded model), as the submit would note it; never a refusal. Notes on the prompt come with the submit, "
        "once the prompt that runs is known.")


class LedgerEntryOut(BaseModel):
    kind: LedgerKind
    amount: int = Field(description="Credits added (negative: taken).")
    balance_after: int
    generation_id: str | None
    reason: str
    created_at: datetime


class TierLimitsOut(BaseModel):
    """The limits of a tier; 0 = no limit beyond the engine's."""

    refill_credits: int
    refill_period_hours: float
    max_pixels: int
    max_steps: int
    max_images: int
    max_concurrent_jobs: int
    max_queued_jobs: int
    requests_per_minute: int
    priority: int


class CreditsOut(BaseModel):
    """The caller's credits: balance, tier and its limits, the next refill and the newest ledger rows."""

    enabled: bool = Field(description="False: generations are free and only the engine limits apply.")
    charged: bool = Field(description="Whether this account's generations cost credits (not for unlimited tiers).")
    tier: str
    balance: int
    next_refill_at: datetime | None
    limits: TierLimitsOut
    history: list[LedgerEntryOut] = Field(description="The newest changes of the balance, newest first.")


def ledger_entry_out(entry: LedgerEntry) -> LedgerEntryOut:
    return LedgerEntryOut(kind=entry.kind, amount=entry.amount, balance_after=entry.balance_after,
                          generation_id=entry.generation_id, reason=entry.reason, created_at=entry.created_at)


class OptOutIn(StrictBody):
    opt_out: bool = Field(strict=True, description="true: keep my records out of training datasets.")


class UserOut(BaseModel):
    id: str
    name: str
    training_opt_out: bool


class DeletedDataOut(BaseModel):
    generations: int
    images: int
    actions: int
    blobs: int


class HealthOut(BaseModel):
    status: Literal["ok", "starting", "degraded"] = Field(
        description="ok: ready; starting (HTTP 503): models still loading, submitted jobs wait in the queue; "
        "degraded: the job queue cannot take jobs."
    )
    mode: str
    queue_depth: int
    worker: bool
    loading: list[str] = Field(default_factory=list, description="What is still loading: expander strategies "
                               "(e.g. local_llm) and/or engine.")


class TrainingRunOut(BaseModel):
    """A training cycle or private-LoRA job: its stage, progress and what its finished stages produced."""

    id: str
    kind: str
    status: str = Field(description="queued, running, interrupted (resumes), succeeded or failed")
    trigger: str
    stage: str
    progress: float = Field(description="0..1 over the whole run")
    message: str | None
    error: str | None
    attempts: int
    state: dict[str, Any] = Field(description="Output of each finished stage (gate metrics, data counts...)")
    result: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    data_until: datetime | None


class ModelVersionOut(BaseModel):
    """A registered model version (expander adapter, reward model, LoRA) and where it is in its release."""

    id: str
    kind: str
    version: int
    tag: str = Field(description="Recorded with what this version served (in a generation's expander_version, or "
                     "its base_model_version for a Diffusion-DPO LoRA)")
    name: str
    parent_id: str | None
    data_hash: str
    metrics: dict[str, Any] = Field(description="The eval gate's numbers.")
    files: list[str]
    status: str = Field(description="candidate, ab_test, promoted, retired, rolled_back or rejected")
    traffic_share: float
    note: str | None
    created_at: datetime
    ab_started_at: datetime | None
    promoted_at: datetime | None
    decided_at: datetime | None
    ab_keep_rate: float | None = Field(
        default=None, description="During an A/B test, on the dashboard: the keep rate of this version's arm.")
    ab_control_keep_rate: float | None = Field(
        default=None, description="During an A/B test, on the dashboard: the keep rate of the other arm.")


class OpenAIImageRequest(StrictBody):
    """The OpenAI Images API request (``POST /v1/images/generations``)."""

    prompt: str = Field(min_length=1, max_length=MAX_TEXT)
    model: str | None = Field(default=None, max_length=MAX_NAME)
    n: int | None = Field(default=1, ge=1, le=10)
    size: str | None = Field(default=None, max_length=16, description="WIDTHxHEIGHT, e.g. 512x512, or 'auto'.")
    response_format: Literal["url", "b64_json"] | None = Field(default=None, description="Default: url.")
    user: str | None = Field(default=None, max_length=MAX_ID, description="End-user id; stored as the session.")
    quality: str | None = Field(default=None, max_length=16, description="Accepted for compatibility; ignored.")
    style: str | None = Field(default=None, max_length=16, description="Accepted for compatibility; ignored.")


class OpenAIImage(BaseModel):
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None


class OpenAIImagesResponse(BaseModel):
    created: int
    data: list[OpenAIImage]


# --- conversions -------------------------------------------------------------------------------------------


def image_out(image: ImageRecord) -> ImageOut:
    return ImageOut(
        id=image.id, index=image.index, seed=image.seed, width=image.width, height=image.height, sha256=image.sha256,
        url=f"/api/v1/images/{image.id}",
    )


def params_out(params: dict[str, Any]) -> dict[str, Any]:
    """Stored params as responses show them: a reference image (base64, up to the body limit) as its SHA-256."""
    shown = dict(params)
    image = shown.pop("ip_image", None)
    if isinstance(image, str):
        shown["ip_image_sha256"] = hashlib.sha256(base64_image_bytes(image)).hexdigest()
    return shown


def generation_out(
    record: GenerationRecord, *, queue_position: int | None, live: Progress | None = None,
    notes: list[str] | None = None,
) -> GenerationOut:
    """The API view of a record; ``live`` is fresher progress from the event stream, if any."""
    progress = Progress(step=record.progress_step, total=record.progress_total)
    if live is not None and not record.status.is_terminal and live.step > progress.step:
        progress = live
    return GenerationOut(
        id=record.id, status=record.status, queue_position=queue_position, progress=progress, intent=record.intent,
        intent_language=record.intent_language, prompt=record.prompt, final_prompt=record.final_prompt,
        negative_prompt=record.negative_prompt, params=params_out(record.params), recipe=record.recipe,
        style=record.style,
        session_id=record.session_id, parent_id=record.parent_id, chain_id=record.chain_id,
        expander_strategy=record.expander_strategy, expander_version=record.expander_version,
        details=dict(record.expansion_details), base_model_id=record.base_model_id,
        base_model_version=record.base_model_version, attempts=record.attempts,
        error=record.error, timings=dict(record.timings), created_at=record.created_at,
        started_at=record.started_at, finished_at=record.finished_at,
        images=[image_out(image) for image in record.images], notes=notes or [],
    )


def action_out(action: ActionRecord, *, created: bool) -> ActionOut:
    edit = None
    if action.edit is not None:
        edit = EditOut(
            prompt_before=action.edit.prompt_before, prompt_after=action.edit.prompt_after,
            char_distance=action.edit.char_distance, token_distance=action.edit.token_distance,
            token_changes=[dict(change) for change in action.edit.token_changes],
        )
    return ActionOut(
        id=action.id, type=action.type, client_event_id=action.client_event_id, image_id=action.image_id,
        generation_id=action.generation_id, child_generation_id=action.child_generation_id, created=created,
        edit=edit, created_at=action.created_at,
    )


def user_out(user: UserAccount) -> UserOut:
    return UserOut(id=user.id, name=user.name, training_opt_out=user.training_opt_out)
