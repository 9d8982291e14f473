"""Share links: a public, revocable link to one image, for visitors who are not signed in.

A link is a random token in the URL (``/s/<token>``). Anyone holding it sees the image and its prompt until the
owner revokes it; revoking is permanent. Deleting the image (or all the user's data) deletes its links too.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import NewType

import sqlalchemy as sa

from imageloop.errors import NotFoundError
from imageloop.storage.db import SessionFactory, get_row, read_session, write_session
from imageloop.storage.models import SHARE_TOKEN_LENGTH, Generation, Image, ShareLinkRow
from imageloop.storage.records import GenerationId, ImageId, UserId, new_id, utcnow

ShareLinkId = NewType("ShareLinkId", str)
TOKEN_BYTES = 24  # 32 URL-safe characters: unguessable, short enough to paste
MAX_TOKEN = SHARE_TOKEN_LENGTH


@dataclass(frozen=True, slots=True)
class ShareLink:
    """A share link as stored; ``active`` until revoked."""

    id: ShareLinkId
    user_id: UserId
    image_id: ImageId
    generation_id: GenerationId
    token: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True, slots=True)
class SharedImage:
    """What a visitor with an active link may see: the image and the prompt that made it (nothing about the user)."""

    link: ShareLink
    blob_key: str
    content_type: str
    width: int
    height: int
    prompt: str | None
    created_at: datetime


def _link(row: ShareLinkRow, generation_id: str) -> ShareLink:
    return ShareLink(
        id=ShareLinkId(row.id), user_id=UserId(row.user_id), image_id=ImageId(row.image_id),
        generation_id=GenerationId(generation_id), token=row.token, created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


class ShareLinkRepository:
    """Create, list, resolve and revoke share links. Every method runs in its own transaction."""

    def __init__(self, sessions: SessionFactory, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._sessions = sessions
        self._clock = clock

    def create(self, user_id: UserId, image_id: ImageId) -> ShareLink:
        """A new active link to the user's image (each call makes a new one); NotFoundError if not theirs."""
        with write_session(self._sessions) as session:
            image = get_row(session, Image, image_id, f"image {image_id!r} not found", user_id=user_id)
            row = ShareLinkRow(
                id=new_id(), user_id=user_id, image_id=image_id, token=secrets.token_urlsafe(TOKEN_BYTES),
                created_at=self._clock(), revoked_at=None,
            )
            session.add(row)
            session.flush()
            return _link(row, image.generation_id)

    def list_for_user(self, user_id: UserId, *, image_id: ImageId | None = None) -> list[ShareLink]:
        """The user's links (revoked ones included), newest first; only those of ``image_id`` when given."""
        query = (
            sa.select(ShareLinkRow, Image.generation_id).join(Image, Image.id == ShareLinkRow.image_id)
            .where(ShareLinkRow.user_id == user_id)
            .order_by(ShareLinkRow.created_at.desc(), ShareLinkRow.id.desc())
        )
        if image_id is not None:
            query = query.where(ShareLinkRow.image_id == image_id)
        with read_session(self._sessions) as session:
            return [_link(row, generation_id) for row, generation_id in session.execute(query)]

    def revoke(self, user_id: UserId, link_id: ShareLinkId) -> ShareLink:
        """Revoke one of the user's links (a no-op when already revoked); NotFoundError if it is not theirs."""
        with write_session(self._sessions) as session:
            row = get_row(session, ShareLinkRow, link_id, f"share link {link_id!r} not found", user_id=user_id)
            if row.revoked_at is None:
                row.revoked_at = self._clock()
            generation_id = session.scalar(sa.select(Image.generation_id).where(Image.id == row.image_id))
            return _link(row, generation_id or "")

    def resolve(self, token: str) -> SharedImage:
        """The image behind an active link; NotFoundError (the same for unknown and revoked) otherwise."""
        if not token or len(token) > MAX_TOKEN:
            raise NotFoundError("share link not found")
        with read_session(self._sessions) as session:
            found = session.execute(
                sa.select(ShareLinkRow, Image, Generation.final_prompt, Generation.prompt, Generation.intent)
                .join(Image, Image.id == ShareLinkRow.image_id)
                .join(Generation, Generation.id == Image.generation_id)
                .where(ShareLinkRow.token == token)
            ).first()
            if found is None or found[0].revoked_at is not None:
                raise NotFoundError("share link not found (it may have been revoked)")
            row, image, final_prompt, prompt, intent = found
            return SharedImage(
                link=_link(row, image.generation_id), blob_key=image.blob_key, content_type=image.content_type,
                width=image.width, height=image.height, prompt=final_prompt or prompt or intent,
                created_at=image.created_at,
            )
