"""Builds kept generations through the real repositories, for the memory, chain and recipe tests."""

from __future__ import annotations

import hashlib
import itertools
from typing import Any

from imageloop.storage import (
    ActionType,
    Expansion,
    FinishedGeneration,
    GenerationRecord,
    NewGeneration,
    NewImage,
    Storage,
    UserId,
    WorkerId,
)

_events = itertools.count()


def finished(storage: Storage, user: UserId, intent: str | None, final: str, *, params: dict[str, Any] | None = None,
             recipe: str | None = None, style: str | None = None, language: str | None = None) -> GenerationRecord:
    """A succeeded generation with one image, as a worker would leave it."""
    request = NewGeneration(intent=intent, intent_language=language, prompt=None if intent else final,
                            params=params or {}, recipe=recipe, style=style)
    job = storage.generations.create(user, request)
    [claimed] = storage.generations.claim(WorkerId("w"))
    assert claimed.id == job.id
    storage.generations.record_expansion(job.id, Expansion(final, expander_strategy="rules", expander_version="t"))
    image = NewImage(0, 1, f"{job.id}/0.png", 8, 8, hashlib.sha256(job.id.encode()).hexdigest())
    return storage.generations.mark_succeeded(job.id, FinishedGeneration(images=[image]))


def act(storage: Storage, user: UserId, record: GenerationRecord, action: ActionType) -> None:
    storage.actions.record(user, action, f"evt-{next(_events)}", image_id=record.images[0].id)


def kept(storage: Storage, user: UserId, intent: str | None, final: str, **kwargs: Any) -> GenerationRecord:
    """A generation whose image the user liked."""
    record = finished(storage, user, intent, final, **kwargs)
    act(storage, user, record, ActionType.LIKE)
    return record
