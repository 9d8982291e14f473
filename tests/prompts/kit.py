"""Builds kept generations through the real repositories, for the memory, chain and recipe tests."""

from __future__ import annotations

from typing import Any

from imageloop.storage import ActionType, GenerationRecord, NewGeneration, Storage, UserId
from tests.records import act, finish, png


def finished(storage: Storage, user: UserId, intent: str | None, final: str, *, params: dict[str, Any] | None = None,
             recipe: str | None = None, style: str | None = None, language: str | None = None) -> GenerationRecord:
    """A succeeded generation with one image, as a worker would leave it."""
    request = NewGeneration(intent=intent, intent_language=language, prompt=None if intent else final,
                            params=params or {}, recipe=recipe, style=style)
    job = storage.generations.create(user, request)
    return finish(storage, job.id, final, [png((0, 0, 0))], expander_strategy="rules", expander_version="t")


def kept(storage: Storage, user: UserId, intent: str | None, final: str, **kwargs: Any) -> GenerationRecord:
    """A generation whose image the user liked."""
    record = finished(storage, user, intent, final, **kwargs)
    act(storage, user, ActionType.LIKE, record.images[0].id)
    return record
