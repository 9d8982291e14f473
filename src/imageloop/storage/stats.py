"""Counts over the whole record for metrics: images stored and how many of them were kept."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from imageloop.storage.db import SessionFactory, read_session
from imageloop.storage.kept import kept_clause
from imageloop.storage.models import Image


@dataclass(frozen=True, slots=True)
class ImageCounts:
    """``images`` stored, of which ``kept`` are kept now (:mod:`imageloop.storage.kept`)."""

    images: int
    kept: int

    @property
    def keep_rate(self) -> float:
        """kept / images, 0 when there are no images."""
        return self.kept / self.images if self.images else 0.0


def image_counts(sessions: SessionFactory) -> ImageCounts:
    """How many images are stored, and how many of them are kept (a like later taken back does not count)."""
    kept = sa.select(sa.func.count(Image.id)).where(kept_clause(Image.id))
    with read_session(sessions) as session:
        images = session.scalar(sa.select(sa.func.count()).select_from(Image)) or 0
        return ImageCounts(images=int(images), kept=int(session.scalar(kept) or 0))
