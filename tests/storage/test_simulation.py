from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from imageloop.storage.db import create_db_engine, upgrade_schema
from imageloop.storage.models import Generation, User
from imageloop.storage.records import JobStatus
from imageloop.storage.simulation import bulk_insert

_AT = datetime(2026, 1, 1, tzinfo=UTC)
_USER = {"id": "u1", "name": "ada", "is_admin": False, "training_opt_out": False, "credits": 0, "tier": "free",
         "created_at": _AT}
_GENERATION = {"id": "g1", "user_id": "u1", "intent": "一只猫", "intent_language": "zh", "final_prompt": "a cat",
               "params": {"steps": 20, "tags": ["a", "b"]}, "recipe": None, "style": "anime", "parent_id": None,
               "chain_id": "g1", "status": JobStatus.SUCCEEDED, "cancel_requested": False, "enqueued_at": _AT,
               "attempts": 1, "progress_step": 20, "progress_total": 20, "timings": {}, "created_at": _AT}


def test_bulk_insert_stores_what_it_is_given(database_url: str) -> None:
    # On PostgreSQL this goes through COPY: enums, JSON, text and timestamps must come back as given.
    db_engine = create_db_engine(database_url)
    upgrade_schema(db_engine)
    bulk_insert(db_engine, users=[_USER], generations=[_GENERATION])
    with db_engine.connect() as connection:
        row = connection.execute(sa.select(Generation)).one()
    db_engine.dispose()
    assert row.status is JobStatus.SUCCEEDED and row.params == {"steps": 20, "tags": ["a", "b"]}
    assert (row.intent, row.recipe, row.style) == ("一只猫", None, "anime")
    assert row.created_at.replace(tzinfo=UTC) == _AT


def test_rows_must_name_defaulted_columns_on_postgresql(database_url: str) -> None:
    db_engine = create_db_engine(database_url)
    upgrade_schema(db_engine)
    user = {key: value for key, value in _USER.items() if key != "credits"}
    if db_engine.dialect.name == "postgresql":
        with pytest.raises(ValueError, match="credits"):
            bulk_insert(db_engine, users=[user])
    else:  # INSERT applies the default
        bulk_insert(db_engine, users=[user])
        with db_engine.connect() as connection:
            assert connection.execute(sa.select(User.credits)).scalar_one() == 0
    db_engine.dispose()
