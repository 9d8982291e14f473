"""Builds a small flywheel record through the real repositories, for the export tests."""

from __future__ import annotations

from dataclasses import dataclass

from imageloop.flywheel.editdiff import edit_details
from imageloop.storage import ActionType, GenerationId, GenerationRecord, NewGeneration, Storage, UserId
from tests.records import act, finish, png


def run(storage: Storage, generation_id: GenerationId, final_prompt: str, n: int = 2) -> GenerationRecord:
    """Play the worker: claim, expand, render ``n`` images into the blob store, finish."""
    pngs = [png((index * 80, len(final_prompt) % 255, 100)) for index in range(n)]
    return finish(storage, generation_id, final_prompt, pngs, expander_version="exp-1", base_model_version="m1")


def generate(
    storage: Storage, user: UserId, intent: str, final: str, *, recipe: str | None = None, style: str | None = None
) -> GenerationRecord:
    job = storage.generations.create(user, NewGeneration(intent=intent, recipe=recipe, style=style))
    return run(storage, job.id, final)


def reroll(storage: Storage, user: UserId, parent: GenerationRecord, final: str) -> GenerationRecord:
    child = act(storage, user, ActionType.REGENERATE, parent.images[0].id,
                child=NewGeneration(intent=parent.intent, recipe=parent.recipe, style=parent.style))
    assert child is not None
    return run(storage, child, final)


def edit(storage: Storage, user: UserId, parent: GenerationRecord, new_prompt: str) -> GenerationRecord:
    assert parent.final_prompt is not None
    child = act(storage, user, ActionType.EDIT, parent.images[0].id,
                edit=edit_details(parent.final_prompt, new_prompt), child=NewGeneration(prompt=new_prompt))
    assert child is not None
    return run(storage, child, new_prompt)


@dataclass
class Record:
    cabin_first: GenerationRecord
    cabin_kept: GenerationRecord
    car_first: GenerationRecord
    car_edited: GenerationRecord
    unliked: GenerationRecord


def build_record(storage: Storage) -> Record:
    """ada: a reroll chain and an edit chain ending in kept images, and an un-liked one; olga (opted out) and
    dan (deleted) have kept images too, which no export may show."""
    ada, _ = storage.users.create_user("ada")
    cabin = generate(storage, ada.id, "a cozy cabin", "cabin, photo", recipe="film", style="warm")
    cabin2 = reroll(storage, ada.id, cabin, "cozy log cabin in snow, golden hour, 35mm")
    act(storage, ada.id, ActionType.LIKE, cabin2.images[1].id)
    act(storage, ada.id, ActionType.DOWNLOAD, cabin2.images[1].id)

    car = generate(storage, ada.id, "une voiture rouge", "a blue car", recipe="film", style="noir")
    car2 = edit(storage, ada.id, car, "a red car, studio light")
    act(storage, ada.id, ActionType.SHARE, car2.images[0].id)

    meh = generate(storage, ada.id, "a dog", "a dog on grass", recipe="film", style="noir")
    act(storage, ada.id, ActionType.LIKE, meh.images[0].id)
    act(storage, ada.id, ActionType.UNLIKE, meh.images[0].id)

    for name in ("olga", "dan"):
        other, _ = storage.users.create_user(name)
        theirs = generate(storage, other.id, f"secret of {name}", f"private prompt of {name}")
        again = reroll(storage, other.id, theirs, f"private reroll of {name}")
        act(storage, other.id, ActionType.DOWNLOAD, again.images[0].id)
    storage.users.set_training_opt_out(storage.users.get_by_name("olga").id, True)
    storage.users.delete_user(storage.users.get_by_name("dan").id, storage.blobs)
    return Record(cabin, cabin2, car, car2, meh)
