"""The web page's read queries (gallery filters, reactions, dashboard counts) and share links, on real databases."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imageloop.errors import NotFoundError
from imageloop.storage import ActionType, JobStatus, NewGeneration, Storage, UserId
from imageloop.storage.dashboard import (
    GalleryFilter,
    action_funnel,
    gallery_page,
    image_actions,
    keep_rate_by_day,
    served_models,
    user_counts,
)
from imageloop.storage.db import read_session
from imageloop.storage.kept import is_kept, kept_clause, liked_clause
from imageloop.storage.models import Image
from imageloop.storage.shares import ShareLinkRepository
from tests.flywheel.record import generate
from tests.records import act

SINCE = datetime(2025, 12, 1, tzinfo=UTC)
IMAGE_ACTIONS = [ActionType.LIKE, ActionType.UNLIKE, ActionType.DISCARD, ActionType.DOWNLOAD, ActionType.SHARE]


def _user(storage: Storage, name: str) -> UserId:
    return storage.users.create_user(name)[0].id


def _flags(storage: Storage, image_id: str) -> tuple[bool, bool]:
    with read_session(storage.sessions) as session:
        row = session.execute(
            sa.select(kept_clause(Image.id), liked_clause(Image.id)).where(Image.id == image_id)
        ).one()
    return bool(row[0]), bool(row[1])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=st.lists(st.sampled_from(IMAGE_ACTIONS), max_size=6))
def test_sql_kept_and_liked_agree_with_the_flywheel_rule(storage: Storage, actions: list[ActionType]) -> None:
    user = UserId(storage.users.list_users()[0].id) if storage.users.list_users() else _user(storage, "ada")
    image = generate(storage, user, "a cat", "a cat, photo").images[0]
    for action in actions:
        act(storage, user, action, image.id)
    reactions = [a for a in actions if a in (ActionType.LIKE, ActionType.UNLIKE, ActionType.DISCARD)]
    assert _flags(storage, image.id) == (is_kept(actions), bool(reactions) and reactions[-1] is ActionType.LIKE)


def test_gallery_filters_by_kept_liked_and_style_for_the_user_only(storage: Storage) -> None:
    ada, bob = _user(storage, "ada"), _user(storage, "bob")
    plain = generate(storage, ada, "a dog", "a dog")
    liked = generate(storage, ada, "a cat", "a cat", style="cinematic")
    downloaded = generate(storage, ada, "a bird", "a bird")
    unliked = generate(storage, ada, "a tree", "a tree", style="cinematic")
    generate(storage, bob, "a ship", "a ship")
    act(storage, ada, ActionType.LIKE, liked.images[1].id)
    act(storage, ada, ActionType.DOWNLOAD, downloaded.images[0].id)
    act(storage, ada, ActionType.LIKE, unliked.images[0].id)
    act(storage, ada, ActionType.UNLIKE, unliked.images[0].id)

    def ids(**kwargs: object) -> list[str]:
        return [record.id for record in gallery_page(storage.sessions, ada, **kwargs).items]  # type: ignore[arg-type]

    assert ids() == [unliked.id, downloaded.id, liked.id, plain.id]  # newest first, bob's left out
    assert ids(show=GalleryFilter.KEPT) == [downloaded.id, liked.id]
    assert ids(show=GalleryFilter.LIKED) == [liked.id]
    assert ids(style="cinematic") == [unliked.id, liked.id]
    assert ids(style="cinematic", show=GalleryFilter.KEPT) == [liked.id]
    assert len(gallery_page(storage.sessions, ada).items[0].images) == 2


def test_gallery_pages_follow_the_cursor_without_gaps_or_repeats(storage: Storage) -> None:
    ada = _user(storage, "ada")
    made = [generate(storage, ada, f"intent {i}", f"prompt {i}").id for i in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        page = gallery_page(storage.sessions, ada, cursor=cursor, limit=2)
        seen += [record.id for record in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == made[::-1]


def test_image_actions_are_the_users_own_oldest_first(storage: Storage) -> None:
    ada = _user(storage, "ada")
    record = generate(storage, ada, "a cat", "a cat")
    first, second = record.images
    act(storage, ada, ActionType.LIKE, first.id)
    act(storage, ada, ActionType.DISCARD, first.id)
    found = image_actions(storage.sessions, ada, [first.id, second.id])
    assert found == {first.id: [ActionType.LIKE, ActionType.DISCARD], second.id: []}
    assert image_actions(storage.sessions, _user(storage, "eve"), [first.id]) == {first.id: []}


def test_dashboard_counts_the_whole_record(storage: Storage) -> None:
    ada, bob = _user(storage, "ada"), _user(storage, "bob")
    storage.users.set_training_opt_out(bob, True)
    kept = generate(storage, ada, "a cat", "a cat")
    other = generate(storage, bob, "a dog", "a dog")
    storage.generations.create(ada, NewGeneration(intent="still queued"))
    act(storage, ada, ActionType.DOWNLOAD, kept.images[0].id)
    act(storage, ada, ActionType.LIKE, kept.images[0].id)
    act(storage, bob, ActionType.DISCARD, other.images[0].id)

    funnel = action_funnel(storage.sessions)
    assert funnel.images == 4 and funnel.kept == 1
    assert funnel.generations[JobStatus.SUCCEEDED] == 2 and funnel.generations[JobStatus.QUEUED] == 1
    assert funnel.by_action[ActionType.DOWNLOAD] == 1 and funnel.by_action[ActionType.DISCARD] == 1
    assert funnel.by_action[ActionType.SHARE] == 0

    [day] = keep_rate_by_day(storage.sessions, SINCE)
    assert (day.day.isoformat(), day.images, day.kept) == ("2026-01-01", 4, 1)
    assert keep_rate_by_day(storage.sessions, datetime(2026, 2, 1, tzinfo=UTC)) == []

    [model] = served_models(storage.sessions)
    assert (model.base_model_version, model.expander_version) == ("m1", "exp-1")
    assert (model.generations, model.images, model.kept) == (2, 4, 1)
    assert user_counts(storage.sessions) == (2, 1)


def test_share_links_resolve_until_revoked_and_only_for_the_owner(storage: Storage) -> None:
    ada, eve = _user(storage, "ada"), _user(storage, "eve")
    image = generate(storage, ada, "a cat", "a cat, photo").images[0]
    shares = ShareLinkRepository(storage.sessions)
    with pytest.raises(NotFoundError):
        shares.create(eve, image.id)
    link = shares.create(ada, image.id)
    found = shares.resolve(link.token)
    assert (found.blob_key, found.prompt) == (image.blob_key, "a cat, photo")
    assert found.link.generation_id == image.generation_id
    assert [x.id for x in shares.list_for_user(ada, image_id=image.id)] == [link.id]
    assert shares.list_for_user(eve) == []
    with pytest.raises(NotFoundError):
        shares.revoke(eve, link.id)
    assert not shares.revoke(ada, link.id).active
    with pytest.raises(NotFoundError, match="revoked"):
        shares.resolve(link.token)
    with pytest.raises(NotFoundError):
        shares.resolve("x" * 500)


def test_deleting_a_users_data_deletes_their_share_links(storage: Storage) -> None:
    ada = _user(storage, "ada")
    image = generate(storage, ada, "a cat", "a cat").images[0]
    shares = ShareLinkRepository(storage.sessions)
    link = shares.create(ada, image.id)
    storage.users.delete_user_data(ada, storage.blobs)
    assert shares.list_for_user(ada) == []
    with pytest.raises(NotFoundError):
        shares.resolve(link.token)
