from __future__ import annotations

# A fresh database per test (SQLite, and PostgreSQL when IMAGELOOP_TEST_POSTGRES_URL is set).
from tests.storage.conftest import clock, database_url, storage  # noqa: F401
