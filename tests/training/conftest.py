from __future__ import annotations

# The storage fixtures (a fresh database per test, SQLite and PostgreSQL) serve the training tests too.
from tests.storage.conftest import FakeClock, clock, database_url, storage  # noqa: F401
