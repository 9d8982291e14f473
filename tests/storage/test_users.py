from __future__ import annotations

import pytest

from imageloop.errors import AuthError, ConflictError, InvalidRequestError, NotFoundError
from imageloop.storage import FinishedGeneration, NewGeneration, NewImage, Storage, image_blob_key
from imageloop.storage.records import ActionType
from tests.storage.conftest import FakeClock


def test_create_user_returns_a_key_that_authenticates_and_is_stored_hashed(storage: Storage) -> None:
    user, key = storage.users.create_user("ada", is_admin=True)
    assert key.startswith("il_") and len(key) > 40
    assert storage.users.authenticate(key) == user
    assert user.is_admin and user.tier == "free" and user.credits == 0 and user.created_at.tzinfo is not None
    with storage.db_engine.connect() as connection:
        stored = connection.exec_driver_sql("SELECT key_hash, prefix FROM api_keys").one()
    assert key not in stored[0] and stored[1] == key[:10]


def test_bad_and_revoked_keys_are_rejected(storage: Storage) -> None:
    user, key = storage.users.create_user("ada")
    with pytest.raises(AuthError):
        storage.users.authenticate(key + "x")
    with pytest.raises(AuthError):
        storage.users.authenticate("Bearer nonsense")
    info, second = storage.users.create_api_key(user.id)
    storage.users.revoke_api_key(user.id, info.id)
    with pytest.raises(AuthError):
        storage.users.authenticate(second)
    assert storage.users.authenticate(key).id == user.id
    assert [k.revoked_at is not None for k in storage.users.list_api_keys(user.id)] == [False, True]


def test_names_are_validated_and_unique(storage: Storage) -> None:
    storage.users.create_user("ada")
    with pytest.raises(ConflictError, match="ada"):
        storage.users.create_user("ada")
    with pytest.raises(InvalidRequestError) as info:
        storage.users.create_user("../etc")
    assert info.value.field == "name"
    assert [u.name for u in storage.users.list_users()] == ["ada"]


def test_passwords(storage: Storage) -> None:
    user, _ = storage.users.create_user("ada")
    with pytest.raises(InvalidRequestError, match="password"):
        storage.users.set_password(user.id, "short")
    storage.users.set_password(user.id, "correct horse")
    assert storage.users.verify_password("ada", "correct horse").id == user.id
    assert storage.users.get(user.id).has_password
    for name, password in (("ada", "wrong horse!"), ("bob", "correct horse")):
        with pytest.raises(AuthError):
            storage.users.verify_password(name, password)


def _generation_with_image(storage: Storage, user_id, index: int = 0):  # type: ignore[no-untyped-def]
    record = storage.generations.create(user_id, NewGeneration(intent="a red fox"))
    key = image_blob_key(record.id, index)
    storage.blobs.put(key, b"png-bytes", "image/png")
    storage.generations.claim("w1")  # type: ignore[arg-type]
    return storage.generations.mark_succeeded(
        record.id, FinishedGeneration(images=[NewImage(index, 1, key, 8, 8, "0" * 64)])
    )


def test_delete_user_data_removes_rows_and_blobs_of_that_user_only(storage: Storage) -> None:
    ada, ada_key = storage.users.create_user("ada")
    bob, _ = storage.users.create_user("bob")
    mine = _generation_with_image(storage, ada.id)
    theirs = _generation_with_image(storage, bob.id)
    storage.actions.record(ada.id, ActionType.LIKE, "e1", image_id=mine.images[0].id)
    storage.actions.record(
        ada.id, ActionType.REGENERATE, "e2", image_id=mine.images[0].id, child=NewGeneration(intent="a red fox")
    )

    deleted = storage.users.delete_user_data(ada.id, storage.blobs)

    assert (deleted.generations, deleted.images, deleted.actions, deleted.blobs) == (2, 1, 2, 1)
    assert not storage.blobs.exists(mine.images[0].blob_key)
    assert storage.blobs.exists(theirs.images[0].blob_key)
    assert storage.generations.history(ada.id).items == ()
    assert len(storage.generations.history(bob.id).items) == 1
    assert storage.users.authenticate(ada_key).id == ada.id  # the account stays


def test_delete_user_marks_deleted_and_revokes_keys(storage: Storage) -> None:
    ada, key = storage.users.create_user("ada")
    storage.users.delete_user(ada.id, storage.blobs)
    with pytest.raises(AuthError):
        storage.users.authenticate(key)
    assert storage.users.get(ada.id).deleted_at is not None
    with pytest.raises(NotFoundError):
        storage.users.set_training_opt_out(ada.id, True)


def test_opt_out_flag(storage: Storage) -> None:
    ada, _ = storage.users.create_user("ada")
    assert storage.users.set_training_opt_out(ada.id, True).training_opt_out
    assert storage.users.get_by_name("ada").training_opt_out
    assert not storage.users.set_training_opt_out(ada.id, False).training_opt_out


def test_an_unknown_name_costs_the_same_scrypt_hash_as_a_known_one(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    from imageloop.storage import users as users_module

    user, _ = storage.users.create_user("ada")
    storage.users.set_password(user.id, "correct horse")
    storage.users.create_user("no-password")
    checked: list[str] = []
    real = users_module.check_password

    def spy(password: str, stored: str) -> bool:
        checked.append(stored)
        return real(password, stored)

    monkeypatch.setattr(users_module, "check_password", spy)
    for name in ("nobody", "no-password", "ada"):
        with pytest.raises(AuthError, match="wrong user name or password"):
            storage.users.verify_password(name, "wrong horse")
    assert len(checked) == 3 and all(stored.startswith("scrypt$16384$8$1$") for stored in checked)
    assert checked[0] == checked[1] != checked[2]  # the unknown names hash against the dummy


def test_sign_in_keys_expire(storage: Storage, clock: FakeClock) -> None:
    user, _ = storage.users.create_user("ada")
    info, key = storage.users.create_sign_in_key(user.id)
    assert info.from_sign_in and info.expires_at is not None
    assert storage.users.authenticate(key).id == user.id
    clock.advance(720 * 3600 + 1)  # auth.session_key_ttl_hours
    with pytest.raises(AuthError, match="expired"):
        storage.users.authenticate(key)


def test_the_key_cap_refuses_new_keys_and_sign_in_makes_room(storage: Storage) -> None:
    user, first = storage.users.create_user("ada")
    storage.users.max_api_keys = 3
    _, sign_in_key = storage.users.create_sign_in_key(user.id)
    storage.users.create_api_key(user.id)
    with pytest.raises(ConflictError, match="at most 3 live API keys"):
        storage.users.create_api_key(user.id)
    newer, _ = storage.users.create_sign_in_key(user.id)  # at the cap: the oldest sign-in key goes
    with pytest.raises(AuthError):
        storage.users.authenticate(sign_in_key)
    assert storage.users.authenticate(first).id == user.id
    storage.users.revoke_api_key(user.id, newer.id)
    hand_made = [k for k in storage.users.list_api_keys(user.id) if k.revoked_at is None]
    assert len(hand_made) == 2 and not any(k.from_sign_in for k in hand_made)
    storage.users.create_api_key(user.id)
    with pytest.raises(ConflictError):
        storage.users.create_sign_in_key(user.id)  # every live key was made by hand: nothing to revoke
