"""Flywheel records for tests, made through the real repositories: the worker's part of a generation (claim,
expansion, images in the blob store, success) and the user's actions, each under a fresh client event id."""

from __future__ import annotations

import hashlib
import io
import itertools
from collections.abc import Sequence
from typing import Any

from PIL import Image as PILImage

from imageloop.storage import (
    ActionType,
    Expansion,
    FinishedGeneration,
    GenerationId,
    GenerationRecord,
    ImageId,
    NewImage,
    Storage,
    UserId,
    WorkerId,
    image_blob_key,
)

_events = itertools.count()


def png(color: tuple[int, int, int], size: int = 8) -> bytes:
    """A ``size`` x ``size`` PNG of one colour."""
    out = io.BytesIO()
    PILImage.new("RGB", (size, size), color).save(out, format="PNG")
    return out.getvalue()


def finish(
    storage: Storage, job_id: GenerationId, final_prompt: str | None, pngs: Sequence[bytes], *,
    expander_strategy: str | None = None, expander_version: str | None = None, base_model_version: str | None = None,
) -> GenerationRecord:
    """Play the worker for ``job_id``, the oldest queued job: claim it, record ``final_prompt`` (when given) as its
    expansion, put ``pngs`` in the blob store as its images (image i has seed i) and mark it succeeded."""
    [claimed] = storage.generations.claim(WorkerId("test-worker"))
    assert claimed.id == job_id
    if final_prompt is not None:
        expansion = Expansion(final_prompt, expander_strategy=expander_strategy, expander_version=expander_version)
        storage.generations.record_expansion(job_id, expansion)
    images = []
    for index, data in enumerate(pngs):
        key = image_blob_key(job_id, index)
        storage.blobs.put(key, data, "image/png")
        with PILImage.open(io.BytesIO(data)) as image:
            width, height = image.size
        images.append(NewImage(index, index, key, width, height, hashlib.sha256(data).hexdigest()))
    finished = FinishedGeneration(images=images, base_model_version=base_model_version)
    return storage.generations.mark_succeeded(job_id, finished)


def act(storage: Storage, user: UserId, action: ActionType, image_id: ImageId, **kwargs: Any) -> GenerationId | None:
    """Record ``action`` on ``image_id`` under a client event id not used before; the child generation it made
    (regenerate, edit), if any."""
    recorded = storage.actions.record(user, action, f"evt-{next(_events)}", image_id=image_id, **kwargs)
    return recorded.action.child_generation_id
