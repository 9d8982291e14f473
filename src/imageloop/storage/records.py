"""The typed values the storage layer takes and returns: IDs, enums and frozen records.

Repositories never hand out ORM objects; callers get these immutable records, so nothing outside
``imageloop.storage`` can change a row by accident (records and actions are append-only).
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NewType

UserId = NewType("UserId", str)
ApiKeyId = NewType("ApiKeyId", str)
GenerationId = NewType("GenerationId", str)
ImageId = NewType("ImageId", str)
ActionId = NewType("ActionId", str)
SessionId = NewType("SessionId", str)
WorkerId = NewType("WorkerId", str)

JsonObject = dict[str, Any]


def new_id() -> str:
    """A fresh random id: 32 lowercase hex characters (a uuid4 without dashes)."""
    return uuid.uuid4().hex


def utcnow() -> datetime:
    """The current time as an aware UTC datetime (the only kind of timestamp stored)."""
    return datetime.now(UTC)


class JobStatus(enum.StrEnum):
    """Where a generation is in its life. Terminal: succeeded, failed, cancelled."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}


class ActionType(enum.StrEnum):
    """What a user did with an image (``imageloop.flywheel.actions`` says which ones mean "kept")."""

    DOWNLOAD = "download"
    SHARE = "share"
    DISCARD = "discard"
    LIKE = "like"
    UNLIKE = "unlike"
    REGENERATE = "regenerate"
    EDIT = "edit"


class HeartbeatResult(enum.StrEnum):
    """What a worker should do after a heartbeat: go on, stop and mark cancelled, stop and fail it (it ran past
    its time limit), or drop the job (lease lost)."""

    CONTINUE = "continue"
    CANCEL = "cancel"
    TIMED_OUT = "timed_out"
    LOST = "lost"


class ModelKind(enum.StrEnum):
    """What a registered model is."""

    EXPANDER = "expander"  # PEFT LoRA adapter of the prompt expander LLM
    REWARD = "reward"  # image preference (reward) model
    LORA = "lora"  # a user's private generator LoRA
    DIFFUSION_DPO = "diffusion_dpo"  # the public generator LoRA trained with Diffusion-DPO on image preference pairs


class ModelStatus(enum.StrEnum):
    """Where a version is in its release: candidate → ab_test → promoted (→ retired when replaced), or rejected
    by the gate, or rolled_back."""

    CANDIDATE = "candidate"
    AB_TEST = "ab_test"
    PROMOTED = "promoted"
    RETIRED = "retired"
    ROLLED_BACK = "rolled_back"
    REJECTED = "rejected"


class RunKind(enum.StrEnum):
    """What a training run does: a whole training cycle, or one user's private LoRA."""

    CYCLE = "cycle"
    USER_LORA = "user_lora"


class RunStatus(enum.StrEnum):
    """A run's state. ``interrupted`` runs (stopped or crashed) resume from their recorded stage."""

    QUEUED = "queued"
    RUNNING = "running"
    INTERRUPTED = "interrupted"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        return self in {RunStatus.SUCCEEDED, RunStatus.FAILED}

class LedgerKind(enum.StrEnum):
    """Why a user's credit balance changed: a grant (or a taking, negative) by an operator, a scheduled refill of
    the tier's allowance, a generation's debit, or the refund of work that failed, was cancelled or withheld."""

    GRANT = "grant"
    REFILL = "refill"
    DEBIT = "debit"
    REFUND = "refund"


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One change of a user's balance: ``amount`` (negative for a debit) and the balance after it."""

    id: str
    user_id: UserId
    kind: LedgerKind
    amount: int
    balance_after: int
    generation_id: GenerationId | None
    reason: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Allowance:
    """A tier's credit allowance: the balance is topped up to ``credits`` once every ``period``."""

    tier: str
    credits: int
    period: timedelta


@dataclass(frozen=True, slots=True)
class Charge:
    """What storing a generation costs its user: ``cost`` credits (taken atomically with the insert, refilled first
    by ``allowance`` when it is due), admitted only while the user has fewer than ``max_active_jobs`` jobs queued or
    running (0 = no limit)."""

    cost: int
    allowance: Allowance | None = None
    max_active_jobs: int = 0


@dataclass(frozen=True, slots=True)
class CreditBalance:
    """A user's balance now, and when the next refill is due (None without an allowance)."""

    credits: int
    next_refill_at: datetime | None


@dataclass(frozen=True, slots=True)
class UserAccount:
    id: UserId
    name: str
    is_admin: bool
    training_opt_out: bool
    has_password: bool
    credits: int
    tier: str
    created_at: datetime
    deleted_at: datetime | None


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """An API key as stored: never the secret, only its display prefix."""

    id: ApiKeyId
    user_id: UserId
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    expires_at: datetime | None = None
    from_sign_in: bool = False


@dataclass(frozen=True, slots=True)
class NewGeneration:
    """What a request asks for; the worker fills in the rest (final prompt, model version, images)."""

    intent: str | None = None
    intent_language: str | None = None
    prompt: str | None = None
    negative_prompt: str | None = None
    params: JsonObject = field(default_factory=dict)
    recipe: str | None = None
    style: str | None = None
    session_id: SessionId | None = None
    parent_id: GenerationId | None = None
    batch_key: str | None = None
    base_model_id: str | None = None
    # The prompt as expanded (or passed through) at submit: stored with the generation, so the worker does not
    # expand again. None: the worker expands the intent when the job runs.
    expansion: Expansion | None = None
    # What it costs its user, debited in the transaction that stores it; None: free (credits off, unlimited tier).
    charge: Charge | None = None


@dataclass(frozen=True, slots=True)
class Expansion:
    """How the intent became the final prompt (written once per generation; a re-run reuses it). ``details`` is
    the expander's JSON-safe account of the prompt (provenance, personal values...), ``recall`` the settings "the
    usual" recalled (JSON), if any."""

    final_prompt: str
    negative_prompt: str | None = None
    expander_strategy: str | None = None
    expander_version: str | None = None
    intent_language: str | None = None
    details: JsonObject = field(default_factory=dict)
    recall: JsonObject | None = None


@dataclass(frozen=True, slots=True)
class NewImage:
    """An image a worker produced and already put in the blob store under ``blob_key``."""

    index: int
    seed: int
    blob_key: str
    width: int
    height: int
    sha256: str
    content_type: str = "image/png"


@dataclass(frozen=True, slots=True)
class FinishedGeneration:
    """What a worker reports when a generation succeeds."""

    images: list[NewImage]
    base_model_id: str | None = None
    base_model_version: str | None = None
    timings: JsonObject = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ImageRecord:
    id: ImageId
    generation_id: GenerationId
    user_id: UserId
    index: int
    seed: int
    blob_key: str
    width: int
    height: int
    sha256: str
    content_type: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class GenerationRecord:
    """One generation: the request, how it was expanded and run, its job state and its images."""

    id: GenerationId
    user_id: UserId
    session_id: SessionId | None
    intent: str | None
    intent_language: str | None
    prompt: str | None
    final_prompt: str | None
    negative_prompt: str | None
    params: JsonObject
    recipe: str | None
    style: str | None
    base_model_id: str | None
    base_model_version: str | None
    expander_strategy: str | None
    expander_version: str | None
    parent_id: GenerationId | None
    chain_id: GenerationId
    batch_key: str | None
    status: JobStatus
    cancel_requested: bool
    enqueued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    worker_id: WorkerId | None
    lease_expires_at: datetime | None
    heartbeat_at: datetime | None
    progress_step: int
    progress_total: int
    error: str | None
    timings: JsonObject
    created_at: datetime
    images: tuple[ImageRecord, ...] = ()
    expansion_details: JsonObject = field(default_factory=dict)  # Expansion.details, once expanded
    expansion_recall: JsonObject | None = None  # Expansion.recall, once expanded


@dataclass(frozen=True, slots=True)
class EditDetails:
    """How a user changed a prompt (built by ``imageloop.flywheel.editdiff.edit_details``)."""

    prompt_before: str
    prompt_after: str
    char_distance: int
    token_distance: int
    token_changes: list[dict[str, str]]


@dataclass(frozen=True, slots=True)
class ActionRecord:
    id: ActionId
    user_id: UserId
    type: ActionType
    client_event_id: str
    image_id: ImageId | None
    generation_id: GenerationId
    child_generation_id: GenerationId | None
    edit: EditDetails | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class RecordedAction:
    """The result of recording an action: ``created`` is False when the client event id was seen before."""

    action: ActionRecord
    created: bool


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """One page of a user's generations, newest first; pass ``next_cursor`` back to get the next page."""

    items: tuple[GenerationRecord, ...]
    next_cursor: str | None
