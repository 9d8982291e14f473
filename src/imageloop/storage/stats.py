"""Counts over the whole record for metrics: images stored and how many of them were kept."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from imageloop.storage.db import SessionFactory, read_session
from imageloop.storage.models import Image, UserAction
from imageloop.storage.records import ActionType


@dataclass(frozen=True, slots=True)
class ImageCounts:
    """``images`` stored, of which ``kept`` have at least one keep action."""

    images: int
    kept: int

    @property
    def keep_rate(self) -> float:
        """kept / images, 0 when there are no images."""
        return self.kept / self.images if self.images else 0.0


def image_counts(sessions: SessionFactory, kept_actions: Iterable[ActionType]) -> ImageCounts:
    """How many images are stored, and how many have an action of ``kept_actions`` (see flywheel.actions)."""
    kept = sa.select(sa.func.count(sa.distinct(UserAction.image_id))).where(
        UserAction.image_id.is_not(None), UserAction.type.in_(sorted(kept_actions))
    )
    with read_session(sessions) as session:
        images = session.scalar(sa.select(sa.func.count()).select_from(Image)) or 0
        return ImageCounts(images=int(images), kept=int(session.scalar(kept) or 0))
