"""Generations: the flywheel record of each request plus its job state, and the durable job queue on top of it.

The database is the source of truth for job state. A worker claims jobs with a lease (one atomic UPDATE; on
PostgreSQL the candidates are picked with ``FOR UPDATE SKIP LOCKED``), extends it with heartbeats, and finishes
them; ``requeue_stale`` puts back the jobs of workers that died. Finishing is idempotent: images are unique per
(generation, index), so a retried finish records each image once. Apart from the job-state columns (and the
expansion, written once: at submit, or by the worker for a job stored without one), a generation never changes
after it is created.

Credits: a generation stored with a ``charge`` is debited in the transaction that stores it, and refunded in the
transaction that ends it without its images (failed, cancelled, given up after lost workers) or with some withheld
(see :mod:`imageloop.storage.credits`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased

from imageloop.errors import InvalidRequestError, NotFoundError
from imageloop.storage._convert import (
    check_final_prompt,
    check_text,
    generation_record,
    image_record,
    insert_ignoring_conflicts,
    load_generations,
)
from imageloop.storage.credits import admit_generation, charge_generation, refund_generation
from imageloop.storage.db import SessionFactory, get_row, read_session, write_session
from imageloop.storage.models import Generation, Image, User
from imageloop.storage.records import (
    Expansion,
    FinishedGeneration,
    GenerationId,
    GenerationRecord,
    HeartbeatResult,
    HistoryPage,
    ImageId,
    ImageRecord,
    JobStatus,
    NewGeneration,
    UserId,
    WorkerId,
    new_id,
    utcnow,
)

MAX_TEXT = 10_000
MAX_HISTORY_PAGE = 100
DEFAULT_MAX_ATTEMPTS = 3
# PostgreSQL advisory lock that serialises claims while a queue policy caps jobs running per user: two workers
# counting a user's running jobs at once would otherwise both see room for one more.
_CLAIM_LOCK_KEY = 0x1A6E_C1A1
_ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)


@dataclass(frozen=True)
class QueuePolicy:
    """How the queue treats users by tier (``settings.credits``): a job of a higher ``priorities`` tier is claimed
    before older jobs of lower ones, and a user never has more than their tier's ``max_running`` jobs running (0 =
    no limit; the rest wait). Tiers not named get the defaults."""

    priorities: Mapping[str, int] = field(default_factory=dict)
    max_running: Mapping[str, int] = field(default_factory=dict)
    default_priority: int = 0
    default_max_running: int = 0

    @property
    def caps_running(self) -> bool:
        """Whether any tier limits the jobs a user runs at once."""
        return self.default_max_running > 0 or any(cap > 0 for cap in self.max_running.values())

    def priority_of(self, tier: Any) -> sa.ColumnElement[int]:
        if not self.priorities:
            return sa.literal(self.default_priority)
        return sa.case(dict(self.priorities), value=tier, else_=self.default_priority)

    def max_running_of(self, tier: Any) -> sa.ColumnElement[int]:
        if not self.max_running:
            return sa.literal(self.default_max_running)
        return sa.case(dict(self.max_running), value=tier, else_=self.default_max_running)


def validate_new_generation(request: NewGeneration) -> None:
    """Raise InvalidRequestError naming the field when ``request`` cannot be stored."""
    if not (request.intent and request.intent.strip()) and not (request.prompt and request.prompt.strip()):
        raise InvalidRequestError("intent", "give an intent or a prompt (both are empty)")
    for name in ("intent", "prompt", "negative_prompt"):
        check_text(name, getattr(request, name), max_length=MAX_TEXT)
    for name, limit in (("recipe", 128), ("style", 128), ("session_id", 64), ("intent_language", 16),
                        ("batch_key", 256), ("base_model_id", 256)):
        check_text(name, getattr(request, name), max_length=limit)
    if request.expansion is not None:
        check_final_prompt(request.expansion.final_prompt, request.expansion.negative_prompt, max_length=MAX_TEXT)
        check_text("negative_prompt", request.expansion.negative_prompt, max_length=MAX_TEXT)


def new_generation_row(
    user_id: str, request: NewGeneration, *, now: datetime, chain_id: str | None = None
) -> Generation:
    """An ORM row for a queued generation (``chain_id`` is the parent's chain; None starts a new chain)."""
    generation_id = new_id()
    row = Generation(
        id=generation_id, user_id=user_id, session_id=request.session_id, intent=request.intent,
        intent_language=request.intent_language, prompt=request.prompt, final_prompt=None,
        negative_prompt=request.negative_prompt, params=dict(request.params), recipe=request.recipe,
        style=request.style, base_model_id=request.base_model_id, parent_id=request.parent_id,
        chain_id=chain_id or generation_id, batch_key=request.batch_key, status=JobStatus.QUEUED,
        cancel_requested=False, enqueued_at=now, attempts=0, progress_step=0, progress_total=0, timings={},
        created_at=now,
    )
    if request.expansion is not None:
        _store_expansion(row, request.expansion)
    return row


def _store_expansion(row: Generation, expansion: Expansion) -> None:
    row.final_prompt = expansion.final_prompt
    if expansion.negative_prompt is not None:
        row.negative_prompt = expansion.negative_prompt
    row.expander_strategy = expansion.expander_strategy
    row.expander_version = expansion.expander_version
    row.intent_language = row.intent_language or expansion.intent_language
    row.expansion_details = dict(expansion.details)
    row.expansion_recall = dict(expansion.recall) if expansion.recall is not None else None


def encode_cursor(created_at: datetime, generation_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{generation_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Inverse of :func:`encode_cursor`; InvalidRequestError naming ``cursor`` when it is not one of ours."""
    try:
        created, generation_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        when = datetime.fromisoformat(created)
    except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
        raise InvalidRequestError("cursor", "not a cursor returned by this API", value=cursor) from exc
    if when.tzinfo is None:
        raise InvalidRequestError("cursor", "not a cursor returned by this API", value=cursor)
    return when, generation_id


class GenerationRepository:
    """Create, read and run generations. Every method runs in its own transaction."""

    def __init__(
        self, sessions: SessionFactory, *, lease_seconds: float = 60.0, clock: Callable[[], datetime] = utcnow,
        policy: QueuePolicy | None = None, max_job_seconds: float = 0.0,
    ) -> None:
        self._sessions = sessions
        self._lease = timedelta(seconds=lease_seconds)
        self._max_run = timedelta(seconds=max_job_seconds) if max_job_seconds > 0 else None  # None: no limit
        self._clock = clock
        self._policy = policy  # None: first in, first out for everyone

    # --- records -------------------------------------------------------------------------------------------

    def create(self, user_id: UserId, request: NewGeneration) -> GenerationRecord:
        """Store a queued generation for the user. A ``parent_id`` must be one of the user's generations."""
        return self.create_many(user_id, [request])[0]

    def create_many(self, user_id: UserId, requests: Sequence[NewGeneration]) -> list[GenerationRecord]:
        """Store several queued generations in one transaction (all or none), in order."""
        for request in requests:
            validate_new_generation(request)
        with write_session(self._sessions) as session:
            now = self._clock()
            # One microsecond apart: the queue orders by enqueue time, so a batch keeps its order when claimed.
            rows = [add_generation(session, user_id, request, now=now + timedelta(microseconds=i))
                    for i, request in enumerate(requests)]
            return [generation_record(row) for row in rows]

    def get(self, user_id: UserId, generation_id: GenerationId) -> GenerationRecord:
        """The user's generation with its images; NotFoundError if it does not exist or is someone else's."""
        with read_session(self._sessions) as session:
            row = get_row(session, Generation, generation_id, f"generation {generation_id!r} not found",
                          user_id=user_id)
            return load_generations(session, [row])[0]

    def get_for_worker(self, generation_id: GenerationId) -> GenerationRecord:
        """Any generation by id (workers act for every user); NotFoundError if it does not exist."""
        with read_session(self._sessions) as session:
            row = get_row(session, Generation, generation_id, f"generation {generation_id!r} not found")
            return load_generations(session, [row])[0]

    def get_image(self, user_id: UserId, image_id: ImageId) -> ImageRecord:
        """The user's image; NotFoundError if it does not exist or is someone else's."""
        with read_session(self._sessions) as session:
            row = get_row(session, Image, image_id, f"image {image_id!r} not found", user_id=user_id)
            return image_record(row)

    def history(self, user_id: UserId, *, cursor: str | None = None, limit: int = 20) -> HistoryPage:
        """One page of the user's generations, newest first. ``limit`` is 1-100."""
        if not 1 <= limit <= MAX_HISTORY_PAGE:
            raise InvalidRequestError("limit", f"must be between 1 and {MAX_HISTORY_PAGE}", value=limit)
        query = sa.select(Generation).where(Generation.user_id == user_id)
        if cursor:
            created_at, last_id = decode_cursor(cursor)
            query = query.where(
                sa.or_(
                    Generation.created_at < created_at,
                    sa.and_(Generation.created_at == created_at, Generation.id < last_id),
                )
            )
        query = query.order_by(Generation.created_at.desc(), Generation.id.desc()).limit(limit + 1)
        with read_session(self._sessions) as session:
            rows = list(session.scalars(query))
            more = len(rows) > limit
            items = load_generations(session, rows[:limit])
        next_cursor = encode_cursor(items[-1].created_at, items[-1].id) if more else None
        return HistoryPage(items=tuple(items), next_cursor=next_cursor)

    def chain_depth(self, generation_id: GenerationId) -> int:
        """How many rerolls/edits lie between the generation and the first of its chain (0 for a first one)."""
        depth = 0
        with read_session(self._sessions) as session:
            parent = session.scalar(sa.select(Generation.parent_id).where(Generation.id == generation_id))
            while parent is not None:
                depth += 1
                parent = session.scalar(sa.select(Generation.parent_id).where(Generation.id == parent))
        return depth

    # --- queue ---------------------------------------------------------------------------------------------

    def queue_depth(self) -> int:
        """How many generations wait in the queue."""
        with read_session(self._sessions) as session:
            query = sa.select(sa.func.count()).select_from(Generation).where(Generation.status == JobStatus.QUEUED)
            return int(session.scalar(query) or 0)

    def queue_position(self, generation_id: GenerationId) -> int | None:
        """1 for the next job to run, 2 for the one after...; None when the generation is not queued. Counted in
        submission order within tiers, an estimate: users taking turns (see :meth:`claim`) can move a job either way."""
        with read_session(self._sessions) as session:
            row = session.get(Generation, generation_id)
            if row is None or row.status != JobStatus.QUEUED:
                return None
            earlier = sa.or_(
                Generation.enqueued_at < row.enqueued_at,
                sa.and_(Generation.enqueued_at == row.enqueued_at, Generation.id < row.id),
            )
            query = sa.select(sa.func.count()).select_from(Generation).where(Generation.status == JobStatus.QUEUED)
            if self._policy is None:
                query = query.where(earlier)
            else:  # ahead: a higher tier's jobs, and older jobs of the same priority
                own = session.scalar(sa.select(User.tier).where(User.id == row.user_id))
                mine = session.scalar(sa.select(self._policy.priority_of(sa.literal(own))))
                theirs = self._policy.priority_of(User.tier)
                query = query.join(User, User.id == Generation.user_id).where(
                    sa.or_(theirs > mine, sa.and_(theirs == mine, earlier))
                )
            ahead = session.scalar(query)
            return int(ahead or 0) + 1

    def claim(self, worker_id: WorkerId, *, limit: int = 1) -> list[GenerationRecord]:
        """Atomically take up to ``limit`` queued jobs for ``worker_id`` and mark them running under a lease.

        Users take turns: the first job is the oldest queued one of the user whose last job started longest ago
        (a user who never ran one first); further jobs share its ``batch_key`` (so they can run in one pipeline
        call). Two workers never get the same job. Returns [] when the queue is empty.
        """
        if limit < 1:
            raise InvalidRequestError("limit", "must be at least 1", value=limit)
        with write_session(self._sessions) as session:
            ids = self._claimable(session, limit)
            if not ids:
                return []
            now = self._clock()
            claimed = session.scalars(
                sa.update(Generation).where(Generation.id.in_(ids), Generation.status == JobStatus.QUEUED).values(
                    status=JobStatus.RUNNING, worker_id=worker_id, attempts=Generation.attempts + 1,
                    started_at=now, heartbeat_at=now, lease_expires_at=now + self._lease,
                ).returning(Generation.id).execution_options(synchronize_session=False)
            ).all()
            rows = session.scalars(sa.select(Generation).where(Generation.id.in_(claimed))).all()
            rows = sorted(rows, key=lambda row: (row.enqueued_at, row.id))
            return load_generations(session, rows)

    def _claimable(self, session: Session, limit: int) -> list[str]:
        """The ids of the next jobs to run, locked: the first in the queue's order, then up to ``limit - 1`` more
        with its batch key. Under a policy the order puts higher tiers first and leaves out jobs of users already
        running their tier's most."""
        queued = Generation.status == JobStatus.QUEUED
        # Fair between users: of the queued jobs, those of the user whose last job started longest ago (or who has
        # never run one) come first, so users take turns and one user's batch of many jobs starves nobody.
        served = aliased(Generation)
        last_served = (
            sa.select(sa.func.max(served.started_at)).where(served.user_id == Generation.user_id)
            .correlate(Generation).scalar_subquery()
        )
        order: list[Any] = [last_served.asc().nulls_first(), Generation.enqueued_at, Generation.id]
        query = sa.select(Generation.id, Generation.batch_key, Generation.user_id).where(queued)
        headroom: dict[str, int] = {}
        if self._policy is not None:
            if self._policy.caps_running and session.get_bind().dialect.name == "postgresql":
                session.execute(sa.select(sa.func.pg_advisory_xact_lock(_CLAIM_LOCK_KEY)))
            running = aliased(Generation)
            running_now = (
                sa.select(sa.func.count()).select_from(running)
                .where(running.user_id == Generation.user_id, running.status == JobStatus.RUNNING)
                .correlate(Generation).scalar_subquery()
            )
            cap = self._policy.max_running_of(User.tier)
            query = query.add_columns((cap - running_now).label("headroom"), cap.label("cap")).join(
                User, User.id == Generation.user_id
            ).where(sa.or_(cap <= 0, running_now < cap))
            order = [self._policy.priority_of(User.tier).desc(), *order]
        # Lock the jobs only (not their users' rows, which a submit may hold while it debits).
        first = session.execute(
            query.order_by(*order).limit(1).with_for_update(skip_locked=True, of=Generation)
        ).first()
        if first is None:
            return []
        ids = [first.id]
        if self._policy is not None and first.cap > 0:
            headroom[first.user_id] = first.headroom - 1
        if limit > 1 and first.batch_key is not None:
            more = session.execute(
                query.where(Generation.batch_key == first.batch_key, Generation.id != first.id)
                .order_by(*order).limit(limit - 1).with_for_update(skip_locked=True, of=Generation)
            ).all()
            for row in more:
                if self._policy is not None and row.cap > 0:
                    left = headroom.get(row.user_id, row.headroom)
                    if left <= 0:
                        continue
                    headroom[row.user_id] = left - 1
                ids.append(row.id)
        return ids

    def heartbeat(
        self, generation_id: GenerationId, worker_id: WorkerId, *, step: int | None = None, total: int | None = None
    ) -> HeartbeatResult:
        """Extend the worker's lease and record progress; say whether to go on, cancel, or drop the job.

        TIMED_OUT means the run started more than ``max_job_seconds`` ago: stop it and fail it. LOST means the lease
        expired and the job went back to the queue (or finished elsewhere): stop silently.
        """
        now = self._clock()
        values: dict[str, object] = {"heartbeat_at": now, "lease_expires_at": now + self._lease}
        if step is not None:
            values["progress_step"] = step
        if total is not None:
            values["progress_total"] = total
        with write_session(self._sessions) as session:
            row = session.execute(
                sa.update(Generation).where(
                    Generation.id == generation_id, Generation.status == JobStatus.RUNNING,
                    Generation.worker_id == worker_id,
                ).values(**values).returning(Generation.cancel_requested, Generation.started_at)
                .execution_options(synchronize_session=False)
            ).first()
        if row is None:
            return HeartbeatResult.LOST
        if row.cancel_requested:
            return HeartbeatResult.CANCEL
        if self._max_run is not None and row.started_at is not None and now - row.started_at > self._max_run:
            return HeartbeatResult.TIMED_OUT
        return HeartbeatResult.CONTINUE

    def requeue_stale(self, *, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> list[GenerationId]:
        """Put running jobs whose lease expired (their worker died) back in the queue, at their old place.

        A job that already ran ``max_attempts`` times fails instead; one whose cancel was requested is cancelled.
        Returns the ids that were re-queued.
        """
        now = self._clock()
        requeued: list[GenerationId] = []
        with write_session(self._sessions) as session:
            stale = session.scalars(
                sa.select(Generation).where(
                    Generation.status == JobStatus.RUNNING, Generation.lease_expires_at < now
                ).with_for_update(skip_locked=True)
            ).all()
            for row in stale:
                row.worker_id = None
                row.lease_expires_at = None
                if row.cancel_requested:
                    row.status, row.finished_at = JobStatus.CANCELLED, now
                    refund_generation(session, row.id, reason="cancelled", now=now)
                elif row.attempts >= max_attempts:
                    row.status, row.finished_at = JobStatus.FAILED, now
                    row.error = f"worker lost {row.attempts} times; giving up"
                    refund_generation(session, row.id, reason="failed: worker lost", now=now)
                else:
                    row.status = JobStatus.QUEUED
                    requeued.append(GenerationId(row.id))
        return requeued

    def release(self, worker_id: WorkerId) -> list[GenerationId]:
        """Give back every job ``worker_id`` still runs (its graceful shutdown): each goes back to the queue at
        its old place at once, lease cleared, without waiting for the lease to expire. A release is not a failed
        attempt (the count is taken back, so restarts never fail a job); a job whose cancel was requested is
        cancelled. Returns the ids that were re-queued."""
        now = self._clock()
        requeued: list[GenerationId] = []
        with write_session(self._sessions) as session:
            held = session.scalars(
                sa.select(Generation).where(
                    Generation.status == JobStatus.RUNNING, Generation.worker_id == worker_id
                ).with_for_update(skip_locked=True)
            ).all()
            for row in held:
                row.worker_id = None
                row.lease_expires_at = None
                row.progress_step = 0
                if row.cancel_requested:
                    row.status, row.finished_at = JobStatus.CANCELLED, now
                    refund_generation(session, row.id, reason="cancelled", now=now)
                else:
                    row.status = JobStatus.QUEUED
                    row.attempts = max(row.attempts - 1, 0)
                    requeued.append(GenerationId(row.id))
        return requeued

    def record_expansion(self, generation_id: GenerationId, expansion: Expansion) -> GenerationRecord:
        """Store how the intent was expanded, once: if a previous attempt already stored one, keep and return it
        (so a re-run job generates from the same final prompt)."""
        check_final_prompt(expansion.final_prompt, expansion.negative_prompt, max_length=MAX_TEXT)
        with write_session(self._sessions) as session:
            row = self._locked(session, generation_id)
            if row.final_prompt is None:
                _store_expansion(row, expansion)
            return load_generations(session, [row])[0]

    def mark_succeeded(self, generation_id: GenerationId, finished: FinishedGeneration) -> GenerationRecord:
        """Record the images and mark the job succeeded. Idempotent: a retried call records each image once, and
        a call for a job already finished (or cancelled) changes nothing and returns the stored record."""
        indexes = [image.index for image in finished.images]
        if len(set(indexes)) != len(indexes) or any(index < 0 for index in indexes):
            raise InvalidRequestError("images", f"image indexes must be distinct and >= 0, got {indexes}")
        with write_session(self._sessions) as session:
            row = self._locked(session, generation_id)
            if row.status not in _ACTIVE:
                return load_generations(session, [row])[0]
            now = self._clock()
            insert_ignoring_conflicts(session, Image.__table__, [  # type: ignore[arg-type]
                {"id": new_id(), "generation_id": row.id, "user_id": row.user_id, "index": image.index,
                 "seed": image.seed, "blob_key": image.blob_key, "width": image.width, "height": image.height,
                 "sha256": image.sha256, "content_type": image.content_type, "created_at": now}
                for image in finished.images
            ], ["generation_id", "index"])
            row.status, row.finished_at, row.lease_expires_at = JobStatus.SUCCEEDED, now, None
            if row.final_prompt is None:
                row.final_prompt = row.prompt or row.intent
            row.base_model_id = finished.base_model_id or row.base_model_id
            row.base_model_version = finished.base_model_version or row.base_model_version
            row.timings = dict(finished.timings)
            row.progress_step = row.progress_total
            asked = int(row.params.get("num_images", 1) or 1)
            if len(finished.images) < asked:  # the rest were withheld by the image checks
                refund_generation(session, row.id, reason=f"{asked - len(finished.images)} of {asked} images withheld",
                                  now=now, missing=asked - len(finished.images), of=asked)
            session.flush()
            return load_generations(session, [row])[0]

    def mark_failed(self, generation_id: GenerationId, error: str) -> GenerationRecord:
        """Mark an active job failed with ``error`` (a finished job is left as it is)."""
        return self._finish(generation_id, JobStatus.FAILED, error=error[:MAX_TEXT])

    def mark_cancelled(self, generation_id: GenerationId) -> GenerationRecord:
        """Mark an active job cancelled (the worker calls this after a heartbeat said CANCEL)."""
        return self._finish(generation_id, JobStatus.CANCELLED)

    def request_cancel(self, user_id: UserId | None, generation_id: GenerationId) -> GenerationRecord:
        """Cancel the user's job: a queued one at once, a running one at its next heartbeat. A finished job is
        returned unchanged. NotFoundError if it is not the user's; ``user_id`` None (an administrator) cancels any
        user's job."""
        with write_session(self._sessions) as session:
            row = self._locked(session, generation_id)
            if user_id is not None and row.user_id != user_id:
                raise NotFoundError(f"generation {generation_id!r} not found")
            if row.status == JobStatus.QUEUED:
                row.status, row.finished_at = JobStatus.CANCELLED, self._clock()
                refund_generation(session, row.id, reason="cancelled", now=row.finished_at)
            elif row.status == JobStatus.RUNNING:
                row.cancel_requested = True
            return load_generations(session, [row])[0]

    def _finish(self, generation_id: GenerationId, status: JobStatus, *, error: str | None = None) -> GenerationRecord:
        with write_session(self._sessions) as session:
            row = self._locked(session, generation_id)
            if row.status in _ACTIVE:
                row.status, row.finished_at, row.lease_expires_at = status, self._clock(), None
                row.error = error
                refund_generation(session, row.id, reason=status.value, now=row.finished_at)
            return load_generations(session, [row])[0]

    @staticmethod
    def _locked(session: Session, generation_id: str) -> Generation:
        return get_row(session, Generation, generation_id, f"generation {generation_id!r} not found", for_update=True)


def add_generation(session: Session, user_id: str, request: NewGeneration, *, now: datetime) -> Generation:
    """Add a queued generation to ``session`` (validated by the caller); a parent must be the user's. With a
    ``charge``, the user is admitted (QuotaError over the queue limit) and debited (OutOfCreditsError), all in the
    caller's transaction."""
    chain_id = None
    if request.parent_id is not None:
        parent = get_row(session, Generation, request.parent_id, f"parent generation {request.parent_id!r} not found",
                         user_id=user_id)
        chain_id = parent.chain_id
    if request.charge is not None:
        admit_generation(session, user_id, request.charge, now=now)
    row = new_generation_row(user_id, request, now=now, chain_id=chain_id)
    session.add(row)
    session.flush()
    if request.charge is not None:
        charge_generation(session, user_id, row.id, request.charge, now=now)
    return row
