"""User actions on images (download, share, discard, like, unlike, regenerate, edit): append-only and idempotent.

The same ``client_event_id`` from the same user records one action: a retry gets the first action back (with the
child generation a ``regenerate``/``edit`` created), never a second row or a second child.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from imageloop.errors import ConflictError, InvalidRequestError, StorageError
from imageloop.storage._convert import action_record, check_text
from imageloop.storage.db import SessionFactory, get_row, read_session, write_session
from imageloop.storage.generations import add_generation, validate_new_generation
from imageloop.storage.models import Generation, Image, UserAction
from imageloop.storage.records import (
    ActionRecord,
    ActionType,
    EditDetails,
    GenerationId,
    ImageId,
    NewGeneration,
    RecordedAction,
    UserId,
    new_id,
    utcnow,
)

MAX_CLIENT_EVENT_ID = 128
# Actions that start a new generation from the one acted on.
CHILD_ACTIONS = frozenset({ActionType.REGENERATE, ActionType.EDIT})


def _validate(
    action: ActionType, client_event_id: str, edit: EditDetails | None, child: NewGeneration | None
) -> None:
    check_text("client_event_id", client_event_id, max_length=MAX_CLIENT_EVENT_ID, required=True)
    if action is ActionType.EDIT and edit is None:
        raise InvalidRequestError("edit", "an edit action needs the prompt before and after")
    if action is not ActionType.EDIT and edit is not None:
        raise InvalidRequestError("edit", f"only edit actions carry an edit, not {action.value}")
    if action in CHILD_ACTIONS and child is None:
        raise InvalidRequestError("child", f"a {action.value} action starts a generation; give its request")
    if action not in CHILD_ACTIONS and child is not None:
        raise InvalidRequestError("child", f"a {action.value} action does not start a generation")
    if child is not None:
        validate_new_generation(child)
    if edit is not None:
        check_text("prompt_before", edit.prompt_before, max_length=10_000)
        check_text("prompt_after", edit.prompt_after, max_length=10_000, required=True)


class ActionRepository:
    """Record and read user actions. Every method runs in its own transaction."""

    def __init__(self, sessions: SessionFactory, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._sessions = sessions
        self._clock = clock

    def record(
        self,
        user_id: UserId,
        action: ActionType,
        client_event_id: str,
        *,
        image_id: ImageId | None = None,
        generation_id: GenerationId | None = None,
        edit: EditDetails | None = None,
        child: NewGeneration | None = None,
    ) -> RecordedAction:
        """Record that the user did ``action`` on an image (or, without one, on a generation).

        ``regenerate`` and ``edit`` need ``child``: the request for the new generation, created queued in the same
        transaction with its parent set to the acted-on generation. ``edit`` needs ``edit`` (see
        ``imageloop.flywheel.editdiff.edit_details``). The image or generation must be the user's (NotFoundError).
        A repeated ``client_event_id`` returns the first action with ``created=False``; reusing it for a different
        action or target is a ConflictError.
        """
        _validate(action, client_event_id, edit, child)
        if image_id is None and generation_id is None:
            raise InvalidRequestError("image_id", "give the image (or generation) the action is about")
        try:
            with write_session(self._sessions) as session:
                # Checked inside the write transaction: one round trip for the common case of a new event.
                seen = session.scalar(_by_event(user_id, client_event_id))
                if seen is not None:
                    return _same_or_conflict(action_record(seen), action, image_id, generation_id)
                row = self._insert(session, user_id, action, client_event_id, image_id, generation_id, edit, child)
                return RecordedAction(action=action_record(row), created=True)
        except StorageError as exc:
            if not isinstance(exc.__cause__, IntegrityError):
                raise
            # A concurrent request with the same client event id won the race: return its action.
            existing = self._existing(user_id, client_event_id)
            if existing is None:
                raise
            return _same_or_conflict(existing, action, image_id, generation_id)

    def _insert(
        self,
        session: Session,
        user_id: str,
        action: ActionType,
        client_event_id: str,
        image_id: str | None,
        generation_id: str | None,
        edit: EditDetails | None,
        child: NewGeneration | None,
    ) -> UserAction:
        if image_id is not None:
            image = get_row(session, Image, image_id, f"image {image_id!r} not found", user_id=user_id)
            if generation_id is not None and generation_id != image.generation_id:
                raise InvalidRequestError("generation_id", "is not the generation of the image", value=generation_id)
            generation_id = image.generation_id
        generation = get_row(session, Generation, generation_id, f"generation {generation_id!r} not found",
                             user_id=user_id)
        now = self._clock()
        child_id = None
        if child is not None:
            request = dataclasses.replace(child, parent_id=GenerationId(generation.id))
            child_id = add_generation(session, user_id, request, now=now).id
        row = UserAction(
            id=new_id(), user_id=user_id, type=action, client_event_id=client_event_id, image_id=image_id,
            generation_id=generation.id, child_generation_id=child_id, created_at=now,
        )
        if edit is not None:
            row.prompt_before, row.prompt_after = edit.prompt_before, edit.prompt_after
            row.char_distance, row.token_distance = edit.char_distance, edit.token_distance
            row.token_changes = list(edit.token_changes)
        session.add(row)
        session.flush()
        return row

    def _existing(self, user_id: str, client_event_id: str) -> ActionRecord | None:
        with read_session(self._sessions) as session:
            row = session.scalar(_by_event(user_id, client_event_id))
            return action_record(row) if row is not None else None

    def list_for_generation(self, user_id: UserId, generation_id: GenerationId) -> list[ActionRecord]:
        """The user's actions on one of their generations, oldest first."""
        with read_session(self._sessions) as session:
            rows = session.scalars(
                sa.select(UserAction).where(UserAction.user_id == user_id, UserAction.generation_id == generation_id)
                .order_by(UserAction.created_at, UserAction.id)
            )
            return [action_record(row) for row in rows]

    def count_by_type(self) -> dict[ActionType, int]:
        """How many actions of each type are stored (for metrics)."""
        with read_session(self._sessions) as session:
            rows = session.execute(sa.select(UserAction.type, sa.func.count()).group_by(UserAction.type))
            counts = dict.fromkeys(ActionType, 0)
            counts.update({row[0]: int(row[1]) for row in rows})
            return counts


def _by_event(user_id: str, client_event_id: str) -> sa.Select[UserAction]:
    return sa.select(UserAction).where(UserAction.user_id == user_id, UserAction.client_event_id == client_event_id)


def _same_or_conflict(
    existing: ActionRecord, action: ActionType, image_id: str | None, generation_id: str | None
) -> RecordedAction:
    same_target = (image_id is None or existing.image_id == image_id) and (
        generation_id is None or existing.generation_id == generation_id
    )
    if existing.type is not action or not same_target:
        raise ConflictError(
            f"client_event_id: {existing.client_event_id!r} was already used for a {existing.type.value} action "
            f"on another target"
            if existing.type is action
            else f"client_event_id: {existing.client_event_id!r} was already used for a {existing.type.value} action"
        )
    return RecordedAction(action=existing, created=False)
