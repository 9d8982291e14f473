"""Row → record conversion and small helpers shared by the repositories (private to ``imageloop.storage``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from imageloop.errors import InvalidRequestError
from imageloop.storage.models import ApiKey, Generation, Image, User, UserAction
from imageloop.storage.records import (
    ActionId,
    ActionRecord,
    ApiKeyId,
    ApiKeyInfo,
    EditDetails,
    GenerationId,
    GenerationRecord,
    ImageId,
    ImageRecord,
    SessionId,
    UserAccount,
    UserId,
    WorkerId,
)


def user_record(row: User) -> UserAccount:
    return UserAccount(
        id=UserId(row.id),
        name=row.name,
        is_admin=row.is_admin,
        training_opt_out=row.training_opt_out,
        has_password=row.password_hash is not None,
        credits=row.credits,
        tier=row.tier,
        created_at=row.created_at,
        deleted_at=row.deleted_at,
    )


def api_key_record(row: ApiKey) -> ApiKeyInfo:
    return ApiKeyInfo(
        id=ApiKeyId(row.id),
        user_id=UserId(row.user_id),
        prefix=row.prefix,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        expires_at=row.expires_at,
        from_sign_in=row.from_sign_in,
    )


def image_record(row: Image) -> ImageRecord:
    return ImageRecord(
        id=ImageId(row.id),
        generation_id=GenerationId(row.generation_id),
        user_id=UserId(row.user_id),
        index=row.index,
        seed=row.seed,
        blob_key=row.blob_key,
        width=row.width,
        height=row.height,
        sha256=row.sha256,
        content_type=row.content_type,
        created_at=row.created_at,
    )


def generation_record(row: Generation, images: Iterable[Image] = ()) -> GenerationRecord:
    return GenerationRecord(
        id=GenerationId(row.id),
        user_id=UserId(row.user_id),
        session_id=SessionId(row.session_id) if row.session_id is not None else None,
        intent=row.intent,
        intent_language=row.intent_language,
        prompt=row.prompt,
        final_prompt=row.final_prompt,
        negative_prompt=row.negative_prompt,
        params=dict(row.params),
        recipe=row.recipe,
        style=row.style,
        base_model_id=row.base_model_id,
        base_model_version=row.base_model_version,
        expander_strategy=row.expander_strategy,
        expander_version=row.expander_version,
        parent_id=GenerationId(row.parent_id) if row.parent_id is not None else None,
        chain_id=GenerationId(row.chain_id),
        batch_key=row.batch_key,
        status=row.status,
        cancel_requested=row.cancel_requested,
        enqueued_at=row.enqueued_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        attempts=row.attempts,
        worker_id=WorkerId(row.worker_id) if row.worker_id is not None else None,
        lease_expires_at=row.lease_expires_at,
        heartbeat_at=row.heartbeat_at,
        progress_step=row.progress_step,
        progress_total=row.progress_total,
        error=row.error,
        timings=dict(row.timings),
        created_at=row.created_at,
        images=tuple(image_record(image) for image in sorted(images, key=lambda image: image.index)),
        expansion_details=dict(row.expansion_details or {}),
        expansion_recall=dict(row.expansion_recall) if row.expansion_recall else None,
    )


def action_record(row: UserAction) -> ActionRecord:
    edit = None
    if row.prompt_before is not None and row.prompt_after is not None:
        edit = EditDetails(
            prompt_before=row.prompt_before,
            prompt_after=row.prompt_after,
            char_distance=row.char_distance or 0,
            token_distance=row.token_distance or 0,
            token_changes=list(row.token_changes or []),
        )
    return ActionRecord(
        id=ActionId(row.id),
        user_id=UserId(row.user_id),
        type=row.type,
        client_event_id=row.client_event_id,
        image_id=ImageId(row.image_id) if row.image_id is not None else None,
        generation_id=GenerationId(row.generation_id),
        child_generation_id=GenerationId(row.child_generation_id) if row.child_generation_id is not None else None,
        edit=edit,
        created_at=row.created_at,
    )


def load_generations(session: Session, rows: Sequence[Generation]) -> list[GenerationRecord]:
    """Records for ``rows`` with their images, in the order given, in one extra query."""
    if not rows:
        return []
    images: dict[str, list[Image]] = {row.id: [] for row in rows}
    for image in session.scalars(sa.select(Image).where(Image.generation_id.in_(list(images)))):
        images[image.generation_id].append(image)
    return [generation_record(row, images[row.id]) for row in rows]


def insert_ignoring_conflicts(
    session: Session, table: sa.Table, rows: list[dict[str, Any]], conflict_columns: list[str]
) -> None:
    """INSERT ``rows``, skipping any that hit the unique constraint on ``conflict_columns`` (SQLite, PostgreSQL)."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    session.execute(insert(table).values(rows).on_conflict_do_nothing(index_elements=conflict_columns))


def check_text(field: str, value: str | None, *, max_length: int, required: bool = False) -> None:
    """Raise InvalidRequestError naming ``field`` when ``value`` is missing (if required), too long or has NULs."""
    if value is None:
        if required:
            raise InvalidRequestError(field, "is required")
        return
    if required and not value.strip():
        raise InvalidRequestError(field, "must not be empty", value=value)
    if len(value) > max_length:
        raise InvalidRequestError(field, f"is {len(value)} characters long, at most {max_length} allowed")
    if "\x00" in value:
        raise InvalidRequestError(field, "must not contain NUL characters")


def check_final_prompt(final_prompt: str | None, negative_prompt: str | None, *, max_length: int) -> None:
    """Raise InvalidRequestError unless ``final_prompt`` can be stored: present, and empty only when the intent
    only excluded things ("no people"), so that what it excluded is the negative prompt and nothing is drawn for it."""
    if final_prompt == "" and negative_prompt and negative_prompt.strip():
        return
    check_text("final_prompt", final_prompt, max_length=max_length, required=True)
