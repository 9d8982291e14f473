"""Prompt previews: the expansion a user was shown ("Show expanded prompt", ``POST /api/v1/prompts/expand``),
kept for a while so that generating from it runs exactly that prompt, without expanding or moderating it again.

A preview belongs to one user and expires ``ttl`` after it was made; expired previews are deleted whenever a new
one is stored. Deleting the user's data deletes their previews.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NewType

import sqlalchemy as sa

from imageloop.errors import InvalidRequestError
from imageloop.storage._convert import check_final_prompt, check_text
from imageloop.storage.db import SessionFactory, read_session, write_session
from imageloop.storage.models import PromptPreviewRow
from imageloop.storage.records import Expansion, UserId, new_id, utcnow

PreviewId = NewType("PreviewId", str)
MAX_TEXT = 10_000


@dataclass(frozen=True, slots=True)
class PromptPreview:
    """A stored preview: the intent as the user sent it and what the expander made of it."""

    id: PreviewId
    user_id: UserId
    intent: str
    intent_language: str | None
    expansion: Expansion
    created_at: datetime
    expires_at: datetime


def _preview(row: PromptPreviewRow) -> PromptPreview:
    expansion = Expansion(
        final_prompt=row.final_prompt, negative_prompt=row.negative_prompt, expander_strategy=row.expander_strategy,
        expander_version=row.expander_version, intent_language=row.language, details=dict(row.details or {}),
        recall=dict(row.recall) if row.recall else None,
    )
    return PromptPreview(id=PreviewId(row.id), user_id=UserId(row.user_id), intent=row.intent,
                         intent_language=row.intent_language, expansion=expansion, created_at=row.created_at,
                         expires_at=row.expires_at)


class PreviewRepository:
    """Store and read prompt previews. Every method runs in its own transaction."""

    def __init__(self, sessions: SessionFactory, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._sessions = sessions
        self._clock = clock

    def store(
        self, user_id: UserId, intent: str, intent_language: str | None, expansion: Expansion, *, ttl: timedelta
    ) -> PromptPreview:
        """Keep ``expansion`` of ``intent`` for ``user_id`` until ``ttl`` from now (and delete expired previews)."""
        check_text("intent", intent, max_length=MAX_TEXT, required=True)
        check_final_prompt(expansion.final_prompt, expansion.negative_prompt, max_length=MAX_TEXT)
        now = self._clock()
        row = PromptPreviewRow(
            id=new_id(), user_id=user_id, intent=intent, intent_language=intent_language,
            final_prompt=expansion.final_prompt, negative_prompt=expansion.negative_prompt,
            expander_strategy=expansion.expander_strategy, expander_version=expansion.expander_version,
            language=expansion.intent_language, details=dict(expansion.details),
            recall=dict(expansion.recall) if expansion.recall is not None else None,
            created_at=now, expires_at=now + ttl,
        )
        with write_session(self._sessions) as session:
            session.execute(sa.delete(PromptPreviewRow).where(PromptPreviewRow.expires_at <= now))
            session.add(row)
            session.flush()
            return _preview(row)

    def get(self, user_id: UserId, preview_id: str) -> PromptPreview:
        """The user's unexpired preview. InvalidRequestError naming ``expansion_id`` when there is none with that
        id (or it is someone else's) or it has expired."""
        with read_session(self._sessions) as session:
            row = session.get(PromptPreviewRow, preview_id)
            if row is None or row.user_id != user_id:
                raise InvalidRequestError(
                    "expansion_id", "no such expanded prompt of yours: expand the intent again", value=preview_id
                )
            preview = _preview(row)
        if preview.expires_at <= self._clock():
            raise InvalidRequestError(
                "expansion_id", f"this expanded prompt expired at {preview.expires_at.isoformat()}: expand the "
                "intent again", value=preview_id,
            )
        return preview
