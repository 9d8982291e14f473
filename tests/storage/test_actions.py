from __future__ import annotations

import threading

import pytest

from imageloop.errors import ConflictError, InvalidRequestError, NotFoundError
from imageloop.storage import (
    ActionType,
    EditDetails,
    GenerationRecord,
    NewGeneration,
    Storage,
    UserId,
)
from tests.records import finish, png

EDIT = EditDetails("a blue car", "a red car", 4, 1, [{"op": "replace", "before": "blue", "after": "red"}])


def _finished(storage: Storage, user_id: UserId, intent: str = "a car") -> GenerationRecord:
    job = storage.generations.create(user_id, NewGeneration(intent=intent))
    return finish(storage, job.id, None, [png((0, 0, 0))])


def test_same_client_event_id_records_one_action(storage: Storage) -> None:
    ada, _ = storage.users.create_user("ada")
    image = _finished(storage, ada.id).images[0]
    first = storage.actions.record(ada.id, ActionType.LIKE, "evt-1", image_id=image.id)
    again = storage.actions.record(ada.id, ActionType.LIKE, "evt-1", image_id=image.id)
    assert first.created and not again.created and again.action == first.action
    assert first.action.generation_id == image.generation_id
    with pytest.raises(ConflictError, match="evt-1"):
        storage.actions.record(ada.id, ActionType.DOWNLOAD, "evt-1", image_id=image.id)
    # Event ids are per user.
    bob, _ = storage.users.create_user("bob")
    bob_image = _finished(storage, bob.id).images[0]
    assert storage.actions.record(bob.id, ActionType.LIKE, "evt-1", image_id=bob_image.id).created


def test_concurrent_duplicates_record_one_action_and_one_child(storage: Storage) -> None:
    ada, _ = storage.users.create_user("ada")
    image = _finished(storage, ada.id).images[0]
    results = []

    def send() -> None:
        results.append(storage.actions.record(
            ada.id, ActionType.REGENERATE, "evt-r", image_id=image.id, child=NewGeneration(intent="a car")
        ))

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(r.created for r in results) == 1
    assert len({r.action.id for r in results}) == 1 and len({r.action.child_generation_id for r in results}) == 1
    assert len(storage.generations.history(ada.id).items) == 2  # the parent and exactly one child


def test_regenerate_and_edit_create_linked_children(storage: Storage) -> None:
    ada, _ = storage.users.create_user("ada")
    parent = _finished(storage, ada.id)
    reroll = storage.actions.record(
        ada.id, ActionType.REGENERATE, "r1", image_id=parent.images[0].id, child=NewGeneration(intent="a car")
    ).action
    child = storage.generations.get(ada.id, reroll.child_generation_id)  # type: ignore[arg-type]
    assert child.parent_id == parent.id and child.chain_id == parent.chain_id

    edited = storage.actions.record(
        ada.id, ActionType.EDIT, "e1", image_id=parent.images[0].id, edit=EDIT,
        child=NewGeneration(prompt="a red car"),
    ).action
    assert edited.edit == EDIT
    edit_child = storage.generations.get(ada.id, edited.child_generation_id)  # type: ignore[arg-type]
    assert edit_child.prompt == "a red car" and edit_child.chain_id == parent.chain_id
    assert [a.type for a in storage.actions.list_for_generation(ada.id, parent.id)] == [
        ActionType.REGENERATE, ActionType.EDIT,
    ]
    assert storage.actions.count_by_type()[ActionType.EDIT] == 1


def test_invalid_actions_name_the_problem(storage: Storage) -> None:
    ada, _ = storage.users.create_user("ada")
    bob, _ = storage.users.create_user("bob")
    image = _finished(storage, ada.id).images[0]
    cases = [
        ({"action": ActionType.EDIT, "client_event_id": "x", "image_id": image.id}, "edit"),
        ({"action": ActionType.LIKE, "client_event_id": "x", "image_id": image.id, "edit": EDIT}, "edit"),
        ({"action": ActionType.REGENERATE, "client_event_id": "x", "image_id": image.id}, "child"),
        ({"action": ActionType.LIKE, "client_event_id": "", "image_id": image.id}, "client_event_id"),
        ({"action": ActionType.LIKE, "client_event_id": "x" * 200, "image_id": image.id}, "client_event_id"),
        ({"action": ActionType.LIKE, "client_event_id": "x"}, "image_id"),
    ]
    for kwargs, field in cases:
        with pytest.raises(InvalidRequestError) as info:
            storage.actions.record(ada.id, **kwargs)  # type: ignore[arg-type]
        assert info.value.field == field
    with pytest.raises(NotFoundError):
        storage.actions.record(bob.id, ActionType.LIKE, "x", image_id=image.id)
    with pytest.raises(NotFoundError):
        storage.actions.record(ada.id, ActionType.LIKE, "x", image_id="nope")  # type: ignore[arg-type]
