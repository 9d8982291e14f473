from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from imageloop.config import Settings
from imageloop.storage import LocalBlobStore, Storage
from tests.storage.dbs import backends, fresh_database


class FakeClock:
    """A settable clock so lease expiry is tested without sleeping."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(microseconds=1)  # strictly increasing, like real time
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(params=backends())
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: SQLite always, PostgreSQL too when IMAGELOOP_TEST_POSTGRES_URL is set."""
    with fresh_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def storage(database_url: str, tmp_path: Path, clock: FakeClock) -> Iterator[Storage]:
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, job_lease_seconds=30)
    store = Storage.open(settings, blobs=LocalBlobStore(tmp_path / "blobs"), clock=clock)
    yield store
    store.close()
