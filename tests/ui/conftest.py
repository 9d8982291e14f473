"""The web page's API tests run on the shared app of tests/conftest.py (tests make their own users)."""

from __future__ import annotations

# The storage fixtures (a fresh database per test, SQLite and PostgreSQL) serve the query tests.
from tests.storage.conftest import clock, database_url, storage  # noqa: F401
