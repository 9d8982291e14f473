from __future__ import annotations

import dataclasses
import importlib.util
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from imageloop.storage import NewGeneration, Storage, UserId, upgrade_schema
from imageloop.storage.vectors import (
    NewMemory,
    NumpyVectorIndex,
    SqliteVecIndex,
    VectorIndex,
    open_vector_index,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _vec(*values: float) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


def _remember(index: VectorIndex, storage: Storage, user: UserId, prompt: str, intent_vec: np.ndarray,
              *, minutes: int = 0, embedder: str = "test-3d") -> str:
    generation = storage.generations.create(user, NewGeneration(intent=f"intent for {prompt}"))
    added = index.add(NewMemory(
        user_id=user, generation_id=generation.id, final_prompt=prompt, embedder=embedder,
        prompt_embedding=intent_vec * 2, intent_embedding=intent_vec, intent=f"intent for {prompt}",
        params={"guidance_scale": 7.0}, recipe="r1", kept_at=T0 + timedelta(minutes=minutes),
    ))
    assert added
    return generation.id


def _check_index(index: VectorIndex, storage: Storage) -> None:
    ada, _ = storage.users.create_user("ada")
    bob, _ = storage.users.create_user("bob")
    _remember(index, storage, ada.id, "rain, monochrome", _vec(1, 0, 0), minutes=1)
    _remember(index, storage, ada.id, "warm lighting, dusk", _vec(0, 1, 0), minutes=2)
    bob_gen = _remember(index, storage, bob.id, "fog, dreamy", _vec(0.9, 0.1, 0), minutes=3)
    bob_other = _remember(index, storage, bob.id, "other embedder", _vec(1, 0, 0), embedder="other-3d")

    hits = index.search(_vec(1, 0.05, 0), embedder="test-3d", k=2)
    assert [h.entry.final_prompt for h in hits] == ["rain, monochrome", "fog, dreamy"]
    assert hits[0].similarity == pytest.approx(0.99875, abs=1e-3)
    assert hits[0].entry.params == {"guidance_scale": 7.0} and hits[0].entry.recipe == "r1"

    mine = index.search(_vec(0, 1, 0), embedder="test-3d", user_id=ada.id, k=5)
    assert [h.entry.final_prompt for h in mine] == ["warm lighting, dusk", "rain, monochrome"]
    by_prompt = index.search(_vec(0, 1, 0), embedder="test-3d", vector_field="prompt", user_id=ada.id, k=1)
    assert by_prompt[0].entry.final_prompt == "warm lighting, dusk"

    assert [e.final_prompt for e in index.entries(ada.id)] == ["warm lighting, dusk", "rain, monochrome"]
    assert index.vectors(ada.id, embedder="test-3d").shape == (2, 3)
    assert index.add(NewMemory(user_id=bob.id, generation_id=bob_gen, final_prompt="again", embedder="test-3d",
                               prompt_embedding=_vec(1, 0, 0), kept_at=T0)) is False

    storage.users.set_training_opt_out(bob.id, True)  # no longer in global searches, still in his own
    assert "fog, dreamy" not in [h.entry.final_prompt for h in index.search(_vec(1, 0, 0), embedder="test-3d")]
    assert index.search(_vec(1, 0, 0), embedder="test-3d", user_id=bob.id)[0].entry.final_prompt == "fog, dreamy"

    assert index.remove([bob_gen]) == 1
    assert index.remembered(bob.id) == {bob_other}
    assert bob_gen not in index.remembered()


def test_numpy_index_on_every_backend(storage: Storage) -> None:
    _check_index(NumpyVectorIndex(storage.db_engine), storage)


def test_open_vector_index_picks_a_working_index(storage: Storage) -> None:
    index = open_vector_index(storage.db_engine)
    assert index.backend in {"numpy", "sqlite-vec", "pgvector"}
    _check_index(index, storage)


def test_sqlite_vec_index_when_the_driver_can_load_extensions(tmp_path: Path, storage: Storage) -> None:
    if storage.db_engine.dialect.name != "sqlite":
        pytest.skip("sqlite-vec is the SQLite index")
    if importlib.util.find_spec("pysqlite3") is None:
        pytest.skip("pysqlite3-binary (a sqlite3 that can load extensions) is not installed")
    import pysqlite3.dbapi2 as loadable_sqlite

    from imageloop.storage.db import session_factory

    db_engine = sa.create_engine(storage.db_engine.url, module=loadable_sqlite)
    upgrade_schema(db_engine)
    index = open_vector_index(db_engine)
    assert isinstance(index, SqliteVecIndex)
    # The same repositories over a connection that can load the extension (fields added later come along).
    loadable = dataclasses.replace(storage, db_engine=db_engine, sessions=session_factory(db_engine))
    _check_index(index, loadable)
    db_engine.dispose()


def test_vectors_are_normalised_and_round_trip(storage: Storage) -> None:
    index = NumpyVectorIndex(storage.db_engine)
    ada, _ = storage.users.create_user("ada")
    _remember(index, storage, ada.id, "p", _vec(3, 4, 0))
    assert np.allclose(index.vectors(ada.id, embedder="test-3d", vector_field="intent"), [[0.6, 0.8, 0.0]])
