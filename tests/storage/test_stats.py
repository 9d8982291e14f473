"""image_counts: images stored and how many were kept (the keep-rate metric)."""

from __future__ import annotations

from imageloop.flywheel.actions import KEPT_ACTIONS
from imageloop.storage import ActionType, FinishedGeneration, NewGeneration, NewImage, Storage, WorkerId
from imageloop.storage.stats import image_counts


def test_counts_images_and_distinct_kept_images(storage: Storage) -> None:
    user, _ = storage.users.create_user("keeper")
    assert image_counts(storage.sessions, KEPT_ACTIONS).keep_rate == 0.0
    generation = storage.generations.create(user.id, NewGeneration(intent="a cat"))
    storage.generations.claim(WorkerId("w"))
    images = [NewImage(index=i, seed=i, blob_key=f"images/x/{i}.png", width=8, height=8, sha256="0") for i in range(4)]
    record = storage.generations.mark_succeeded(generation.id, FinishedGeneration(images=images))
    first, second = record.images[0].id, record.images[1].id
    storage.actions.record(user.id, ActionType.LIKE, "e1", image_id=first)
    storage.actions.record(user.id, ActionType.DOWNLOAD, "e2", image_id=first)  # same image: counted once
    storage.actions.record(user.id, ActionType.DISCARD, "e3", image_id=second)  # not a keep
    counts = image_counts(storage.sessions, KEPT_ACTIONS)
    assert (counts.images, counts.kept) == (4, 1)
    assert counts.keep_rate == 0.25
