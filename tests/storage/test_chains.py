"""The record as chains: a reading process hands over exactly what a reading thread does, stops when the consumer
stops, and passes its errors on."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
import sqlalchemy as sa

from imageloop.bench.events import prepare_database, synthesise
from imageloop.storage.chains import _queries, read_chains
from imageloop.storage.db import create_db_engine
from imageloop.storage.records import utcnow


@pytest.mark.parametrize("images", [True, False])
def test_a_reading_process_gives_what_a_reading_thread_gives(database_url: str, images: bool) -> None:
    db_engine = prepare_database(database_url)
    synthesise(db_engine, 1_500, users=12)
    by_thread = list(read_chains(db_engine, images=images, process=False))
    by_process = list(read_chains(db_engine, images=images, process=True))
    db_engine.dispose()
    assert len(by_thread) > 100
    assert by_process == by_thread
    assert any(chain.images for chain in by_thread) is images and any(chain.actions for chain in by_thread)


def test_a_small_record_is_read_without_a_process(database_url: str) -> None:
    db_engine = prepare_database(database_url)
    synthesise(db_engine, 200, users=3)
    chains = read_chains(db_engine)
    next(chains)
    assert multiprocessing.active_children() == []
    chains.close()  # type: ignore[attr-defined]  # the iterator is a generator
    db_engine.dispose()


def test_closing_early_stops_the_reading_process(database_url: str) -> None:
    db_engine = prepare_database(database_url)
    synthesise(db_engine, 1_500, users=12)
    chains = read_chains(db_engine, process=True)
    first = next(chains)
    assert first.generations and len(multiprocessing.active_children()) == 1
    chains.close()  # type: ignore[attr-defined]  # the iterator is a generator
    assert multiprocessing.active_children() == []
    db_engine.dispose()


def test_an_error_in_the_reading_process_is_raised_here(tmp_path: Path) -> None:
    db_engine = create_db_engine(f"sqlite:///{tmp_path / 'no-schema.db'}")  # no tables to read
    with pytest.raises(sa.exc.OperationalError, match="no such table"):
        list(read_chains(db_engine, process=True))
    assert multiprocessing.active_children() == []
    db_engine.dispose()


def test_on_sqlite_the_action_stream_walks_generations_in_chain_order(tmp_path: Path) -> None:
    # Left to its planner, SQLite reads every action by creation time and sorts them all before the first row
    # (seconds on a large record, while the export waits); walking generations in chain order streams at once.
    db_engine = prepare_database(f"sqlite:///{tmp_path / 'record.db'}")
    synthesise(db_engine, 1_500, users=12)
    _, _, actions = _queries(None, utcnow(), images=True)
    with db_engine.connect() as connection:
        sql = str(actions.compile(dialect=connection.dialect))
        params = actions.compile(dialect=connection.dialect).params
        plan = [row[3] for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", tuple(params.values()))]
    db_engine.dispose()
    assert plan[0].startswith("SCAN generations USING INDEX ix_generations_chain_id"), plan
    assert "USE TEMP B-TREE FOR ORDER BY" not in plan, plan  # only the right part: within a chain
