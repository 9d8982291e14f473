"""An export reads one snapshot with an upper time bound: what other connections commit while it runs (a user
toggling the training opt-out, new generations and actions) neither drops nor mixes any chain."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import sqlalchemy as sa

from imageloop.flywheel.export import export_dataset, iter_chains
from imageloop.storage import ActionType, GenerationId, Storage, UserId
from imageloop.storage.chains import Chain
from tests.flywheel.record import generate, reroll
from tests.records import act
from tests.storage.conftest import FakeClock


def _kept_chain(storage: Storage, user: UserId, topic: str) -> None:
    first = generate(storage, user, f"{topic} intent", f"{topic}, first try")
    again = reroll(storage, user, first, f"{topic}, kept prompt")
    act(storage, user, ActionType.DOWNLOAD, again.images[0].id)


def _people(storage: Storage) -> dict[str, UserId]:
    """Four users with two kept chains each; olive starts opted out of training."""
    users = {}
    for name in ("ada", "bob", "olive", "zed"):
        users[name] = storage.users.create_user(name)[0].id
        for topic in ("harbour", "meadow"):
            _kept_chain(storage, users[name], f"{name} {topic}")
    storage.users.set_training_opt_out(users["olive"], True)
    return users


def _while_actions_are_read(storage: Storage, change: Any) -> None:
    """Run ``change`` (on its own connections, committed) just before the export's action stream is queried:
    after the generation stream has been read from, before the other streams are."""
    fired = False

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        nonlocal fired
        # PostgreSQL streams through a server-side cursor: "DECLARE ... CURSOR FOR SELECT ...".
        query = statement.lstrip().upper().startswith(("SELECT", "DECLARE"))
        if not fired and query and "user_actions.generation_id" in statement:
            fired = True
            change()

    sa.event.listen(storage.db_engine, "before_cursor_execute", before)


def _users_of(storage: Storage, chains: list[Chain]) -> set[str]:
    ids = {generation.id for chain in chains for generation in chain.generations}
    return {storage.generations.get_for_worker(GenerationId(gid)).user_id for gid in ids}


def test_opt_out_toggled_during_an_export_loses_and_mixes_nothing(storage: Storage, tmp_path: Path) -> None:
    users = _people(storage)
    before = list(iter_chains(storage.db_engine))
    assert _users_of(storage, before) == {users["ada"], users["bob"], users["zed"]}
    assert all(chain.images and chain.actions for chain in before)

    def toggle() -> None:
        storage.users.set_training_opt_out(users["olive"], False)  # opts back in mid-export
        storage.users.set_training_opt_out(users["bob"], True)  # opts out mid-export
        _kept_chain(storage, users["zed"], "zed written during the export")

    _while_actions_are_read(storage, toggle)
    during = list(iter_chains(storage.db_engine))
    # The export saw the record as it was when it started: every chain whole, nobody added or dropped.
    assert during == before

    after = list(iter_chains(storage.db_engine))
    assert _users_of(storage, after) == {users["ada"], users["olive"], users["zed"]}
    assert len(after) == len(before) + 1  # olive's two chains in, bob's two out, zed's new one in
    assert all(chain.images and chain.actions for chain in after)


def test_a_dataset_exported_during_a_toggle_matches_one_exported_before(storage: Storage, tmp_path: Path) -> None:
    users = _people(storage)
    expected = pq.read_table(export_dataset("sft", storage.db_engine, tmp_path / "before").path).to_pylist()
    assert len(expected) == 6  # one kept generation per chain of ada, bob and zed

    _while_actions_are_read(storage, lambda: storage.users.set_training_opt_out(users["olive"], False))
    during = pq.read_table(export_dataset("sft", storage.db_engine, tmp_path / "during").path).to_pylist()
    assert during == expected


def test_rows_created_after_until_are_left_out(storage: Storage, clock: FakeClock) -> None:
    ada = storage.users.create_user("ada")[0].id
    first = generate(storage, ada, "a lighthouse", "a lighthouse at dusk")
    clock.advance(30)
    until = clock.now
    clock.advance(30)
    act(storage, ada, ActionType.DOWNLOAD, first.images[0].id)  # after until: not part of this export
    generate(storage, ada, "a windmill", "a windmill in fog")  # a new chain after until

    chains = list(iter_chains(storage.db_engine, until=until))
    assert [chain.chain_id for chain in chains] == [first.chain_id]
    assert chains[0].actions == []
    assert len(list(iter_chains(storage.db_engine))) == 2
