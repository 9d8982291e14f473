from __future__ import annotations

from collections.abc import Iterator

import pytest

from imageloop.config import Settings
from imageloop.storage import Storage, UserId


@pytest.fixture
def storage(settings: Settings) -> Iterator[Storage]:
    """The storage of the module's ``settings``, closed after the test."""
    store = Storage.open(settings)
    yield store
    store.close()


@pytest.fixture
def user(storage: Storage) -> UserId:
    return storage.users.create_user("job-test")[0].id
