"""Honest gates: no candidate is promoted or A/B-tested on fewer held-out items than ``training.min_heldout_items``;
a stage short of held-out data says so and keeps its data window open; the reward model reports its held-out
pairwise accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imageloop.config import Settings, TrainingSettings
from imageloop.storage import Storage
from imageloop.training.cycle import TrainingCycle
from imageloop.training.gate import MIN_HELDOUT_ITEMS, evaluate_gate
from imageloop.training.registry import ModelKind
from tests.storage.conftest import FakeClock
from tests.training.records import preference_world
from tests.training.tiny_lm import FAST_CYCLE, TinyLoader


def _cycle(storage: Storage, tmp_path: Path, clock: FakeClock, **training: Any) -> TrainingCycle:
    settings = Settings(data_dir=tmp_path / "data", database_url=str(storage.db_engine.url),
                        training={**FAST_CYCLE, **training})
    return TrainingCycle(settings, storage, expander_loader=TinyLoader(), clock=clock)


def test_the_floor_is_one_documented_setting() -> None:
    field = TrainingSettings.model_fields["min_heldout_items"]
    assert field.default == MIN_HELDOUT_ITEMS == 30 and field.description
    assert "too little held-out data" in field.description


def test_a_candidate_right_on_all_of_9_heldout_pairs_is_not_promoted() -> None:
    gate = evaluate_gate([1.0] * 9, None, confidence=0.9)
    assert not gate.passed and gate.pairs == 9
    assert gate.reason == "too little held-out data (n = 9 < 30)"
    # The same record on enough pairs passes.
    assert evaluate_gate([1.0] * 30, None, confidence=0.9).passed


def test_a_stage_short_of_heldout_pairs_promotes_nothing_and_keeps_collecting(
    storage: Storage, tmp_path: Path, clock: FakeClock
) -> None:
    user, _ = storage.users.create_user("ada")
    preference_world(storage, user.id, chains=20)  # enough to train on, too few held out to judge
    cycle = _cycle(storage, tmp_path, clock, min_heldout_items=30)
    first = cycle.run(now=clock())
    for stage, heldout in (("expander", "heldout_intents"), ("reward", "pairs_test")):
        output = first.stages[stage]
        assert "counts" in output, first.stages
        n = output["counts"][heldout]  # counts: a starved stage, whose window stays open
        assert n < 30 and output["skipped"] == f"too little held-out data (n = {n} < 30)", output
    assert cycle.registry.list(ModelKind.REWARD) == [] and cycle.registry.current(ModelKind.REWARD) is None
    assert cycle.registry.list(ModelKind.EXPANDER) == []

    clock.advance(3600)
    preference_world(storage, user.id, chains=90, seed=1)
    second = cycle.run(now=clock())
    # The first week's pairs are read again with the new ones; now the held-out share is big enough to judge.
    assert second.stages["export"]["since"] is None and second.stages["export"]["rows"]["dpo"] == 110
    reward = cycle.registry.get(second.stages["reward"]["version_id"])
    assert reward.metrics["gate"]["pairs"] >= 30


def test_the_reward_model_reports_heldout_pairwise_accuracy(
    storage: Storage, tmp_path: Path, clock: FakeClock
) -> None:
    user, _ = storage.users.create_user("ada")
    preference_world(storage, user.id, chains=30)
    cycle = _cycle(storage, tmp_path, clock)  # FAST_CYCLE's floor of 2: the tiny world is judged
    result = cycle.run(now=clock())
    reward = cycle.registry.get(result.stages["reward"]["version_id"])
    assert reward.metrics["heldout_pairs"] == reward.metrics["gate"]["pairs"] > 0
    assert reward.metrics["heldout_pairwise_accuracy"] == reward.metrics["gate"]["candidate_accuracy"] >= 0.9
