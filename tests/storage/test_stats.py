"""image_counts (the keep-rate metric) and the dataset exports count kept images by the same rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from imageloop.flywheel.datasets import view
from imageloop.flywheel.export import export_dataset, iter_chains
from imageloop.storage import ActionType, FinishedGeneration, NewGeneration, NewImage, Storage, WorkerId
from imageloop.storage.kept import is_kept
from imageloop.storage.stats import image_counts
from tests.flywheel.record import generate
from tests.records import act

A = ActionType
# One image's actions, oldest first; each is_kept case of tests/flywheel/test_actions.py and a few more.
SEQUENCES = [
    [], [A.LIKE], [A.LIKE, A.UNLIKE], [A.LIKE, A.UNLIKE, A.LIKE], [A.LIKE, A.DISCARD], [A.DOWNLOAD],
    [A.SHARE, A.DISCARD], [A.LIKE, A.UNLIKE, A.DOWNLOAD], [A.UNLIKE, A.LIKE], [A.DISCARD], [A.LIKE, A.LIKE, A.UNLIKE],
]


def test_counts_images_and_distinct_kept_images(storage: Storage) -> None:
    user, _ = storage.users.create_user("keeper")
    assert image_counts(storage.sessions).keep_rate == 0.0
    generation = storage.generations.create(user.id, NewGeneration(intent="a cat"))
    storage.generations.claim(WorkerId("w"))
    images = [NewImage(index=i, seed=i, blob_key=f"images/x/{i}.png", width=8, height=8, sha256="0") for i in range(4)]
    record = storage.generations.mark_succeeded(generation.id, FinishedGeneration(images=images))
    first, second, third = (image.id for image in record.images[:3])
    storage.actions.record(user.id, ActionType.LIKE, "e1", image_id=first)
    storage.actions.record(user.id, ActionType.DOWNLOAD, "e2", image_id=first)  # same image: counted once
    storage.actions.record(user.id, ActionType.DISCARD, "e3", image_id=second)  # not a keep
    storage.actions.record(user.id, ActionType.LIKE, "e4", image_id=third)
    storage.actions.record(user.id, ActionType.UNLIKE, "e5", image_id=third)  # the like was taken back
    counts = image_counts(storage.sessions)
    assert (counts.images, counts.kept) == (4, 1)
    assert counts.keep_rate == 0.25


@pytest.mark.parametrize("order", ["forward", "reverse"])
def test_metric_and_exports_agree_on_what_was_kept(storage: Storage, tmp_path: Path, order: str) -> None:
    user, _ = storage.users.create_user("ada")
    sequences = SEQUENCES if order == "forward" else SEQUENCES[::-1]
    for i, actions in enumerate(sequences):
        record = generate(storage, user.id, f"intent {i}", f"prompt {i}")  # two images, the second untouched
        for action in actions:
            act(storage, user.id, action, record.images[0].id)
    expected = sum(is_kept(actions) for actions in sequences)
    assert 0 < expected < len(sequences)

    metric = image_counts(storage.sessions)
    exported_images = set().union(*(view(chain).kept_images for chain in iter_chains(storage.db_engine)))
    sft = export_dataset("sft", storage.db_engine, tmp_path / "sft")  # one row per kept generation (distinct prompts)
    assert metric.images == 2 * len(sequences)
    assert metric.kept == len(exported_images) == sft.rows == expected
