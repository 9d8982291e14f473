"""One self-training cycle: decide A/B tests → export → expander (SFT + DPO) → reward model → Diffusion-DPO → finish.

``run_cycle(settings, now=..., on_progress=...)`` runs one cycle to the end and returns a :class:`CycleResult`.
Only one cycle runs at a time (the ``cycle`` lease of :mod:`imageloop.storage.locks`); a second caller gets a
ConflictError naming the running one. Each stage's output is recorded in the run's row when it finishes, so a
cycle that is stopped or whose process dies resumes at the stage it was in (the next call picks it up); a stage
that registered its model before the crash is not trained again.

Every trained model goes through the eval gate (:mod:`imageloop.training.gate`) on held-out pairs against the
current version (for the expander: the base LLM when no adapter is promoted yet; for the reward model: chance; for
the Diffusion-DPO LoRA of the generator: the base UNet, i.e. chance). A candidate that beats it is released (A/B
tested, or promoted); one that does not is registered as rejected. A stage without enough data records why it
skipped (``{"skipped": reason}``): too few pairs to train on, or fewer held-out pairs than
``training.min_heldout_items`` ("too little held-out data (n = 9 < 30)"), since no candidate is promoted or A/B-tested
on less; either way its data window stays open and the next cycle sees this data again, with the new.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from imageloop.config import Settings
from imageloop.errors import ConflictError, ImageloopError, TrainingError, UnsupportedModelError
from imageloop.flywheel.export import export_datasets
from imageloop.storage import Storage
from imageloop.storage.records import utcnow
from imageloop.training.data import CycleData, snapshot_hash
from imageloop.training.expander_stage import expander_data, gate_expander
from imageloop.training.gate import GateResult, correctness, evaluate_gate, too_little_heldout
from imageloop.training.lock import RunKind, RunStatus, TrainingRun, new_owner_id
from imageloop.training.registry import AB_TESTED_KINDS, ModelKind, ModelVersion
from imageloop.training.stores import TrainingStores

__all__ = ["STAGES", "TRAINED_STAGES", "CycleInterrupted", "CycleResult", "Stage", "TrainingCycle", "run_cycle"]

log = logging.getLogger(__name__)

_DATASETS = ("sft", "dpo", "pairs", "labels")
ProgressFn = Callable[[float, str], None]
ExpanderLoader = Callable[[Settings], tuple[Any, Any]]
StageRun = Callable[["TrainingCycle", TrainingRun, datetime, "_Reporter"], dict[str, Any]]


def _always_on(settings: Settings) -> str | None:
    return None


@dataclass(frozen=True)
class Stage:
    """One stage of a cycle (:data:`STAGES` lists them in order)."""

    name: str  # the key of its output in the run's state, and the run's ``stage`` while it runs
    trains: ModelKind | None  # the model it trains and registers; None for bookkeeping stages
    progress_share: float  # its part of the cycle's progress bar (training dominates)
    run: StageRun
    # Why the settings switch its training off, None when they do not (a switched-off stage holds no data
    # window open).
    switched_off: Callable[[Settings], str | None] = _always_on


class CycleInterrupted(TrainingError):
    """The cycle was asked to stop; its run is marked interrupted and resumes next time."""


@dataclass(frozen=True)
class CycleResult:
    """What one cycle did: its run, whether it resumed an earlier attempt, and each stage's output."""

    run: TrainingRun
    resumed: bool
    stages: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> RunStatus:
        return self.run.status

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run.to_dict(), "resumed": self.resumed, "stages": self.stages}


def _default_loader(settings: Settings) -> tuple[Any, Any]:
    from imageloop.training.expander import load_expander_base

    return load_expander_base(settings)


class TrainingCycle:
    """Runs cycles against one storage; ``expander_loader`` supplies the base LLM (tests pass a tiny one)."""

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        *,
        expander_loader: ExpanderLoader | None = None,
        clock: Callable[[], datetime] = utcnow,
        stop: threading.Event | None = None,
        stores: TrainingStores | None = None,
    ) -> None:
        self.settings = settings
        self.storage = storage
        # The process's registry, runs and lock when given (the server's); else ones of our own.
        stores = stores or TrainingStores.open(settings, storage, clock=clock)
        self.registry = stores.registry
        self.runs = stores.runs
        self.lock = stores.cycle_lock
        self.expander_loader = expander_loader or _default_loader
        self.clock = clock
        self.stop = stop or threading.Event()

    def request(self, *, trigger: str = "api") -> TrainingRun:
        """Queue a cycle to be run by the training worker; the queued run if one is already waiting or running."""
        pending = self.runs.resumable(RunKind.CYCLE)
        if pending is not None:
            return pending
        return self.runs.create(RunKind.CYCLE, trigger=trigger, stage=STAGES[0].name)

    def run(
        self, *, now: datetime | None = None, trigger: str = "manual", on_progress: ProgressFn | None = None
    ) -> CycleResult:
        """Run (or resume) one cycle to its end; see the module docstring. ConflictError when one is running."""
        now = now or self.clock()
        owner = new_owner_id("cycle")
        if not self.lock.acquire(owner):
            holder = self.lock.holder()
            raise ConflictError(f"a training cycle is already running (run {holder[1] if holder else '?'})")
        try:
            run = self.runs.resumable(RunKind.CYCLE) or self.runs.create(RunKind.CYCLE, trigger=trigger,
                                                                         stage=STAGES[0].name)
            resumed = run.status in (RunStatus.RUNNING, RunStatus.INTERRUPTED)
            self.lock.acquire(owner, run.id)
            run = self.runs.claim(run.id, owner)
            if resumed:
                log.warning("resuming training cycle %s at stage %s (attempt %d)", run.id, run.stage, run.attempts)
            return self._run_stages(run, owner, now, resumed, on_progress)
        finally:
            self.lock.release(owner)

    def _run_stages(
        self, run: TrainingRun, owner: str, now: datetime, resumed: bool, on_progress: ProgressFn | None
    ) -> CycleResult:
        reporter = _Reporter(self, run.id, owner, on_progress)
        try:
            first = STAGES.index(_STAGE_NAMED[run.stage])
            for index, stage in enumerate(STAGES[first:], start=first):
                if self.stop.is_set():
                    raise CycleInterrupted("the cycle was asked to stop")
                reporter.enter(stage)
                output = stage.run(self, run, now, reporter)
                following = STAGES[min(index + 1, len(STAGES) - 1)]
                run = self.runs.finish_stage(run.id, stage.name, output, next_stage=following.name)
            # The time of the export (an interrupted cycle resumes later): the next cycle exports from there.
            until = run.state.get("export", {}).get("until")
            run = self.runs.update(run.id, status=RunStatus.SUCCEEDED, progress=1.0, finished_at=self.clock(),
                                   data_until=datetime.fromisoformat(until) if until else now,
                                   result=_summary(run.state), message="done")
            reporter.report(1.0, "cycle finished")
            return CycleResult(run, resumed, run.state)
        except CycleInterrupted as exc:
            run = self.runs.update(run.id, status=RunStatus.INTERRUPTED, message=exc.message)
            return CycleResult(run, resumed, run.state)
        except Exception as exc:
            message = exc.message if isinstance(exc, ImageloopError) else f"{type(exc).__name__}: {exc}"
            self.runs.update(run.id, status=RunStatus.FAILED, error=message, finished_at=self.clock())
            if isinstance(exc, ImageloopError):
                raise
            raise TrainingError(f"training cycle {run.id} failed at stage {run.stage}: {message}") from exc
        except BaseException:
            # Ctrl-C or interpreter shutdown: leave it resumable.
            self.runs.update(run.id, status=RunStatus.INTERRUPTED, message="interrupted")
            raise

    # -- stages ------------------------------------------------------------------------------------------------------

    def _ab_tests(self, run: TrainingRun, now: datetime, reporter: _Reporter) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kind in sorted(AB_TESTED_KINDS):
            decision = self.registry.decide_ab_test(kind)
            if decision is not None:
                out[kind.value] = {"version_id": decision.version_id, "action": decision.action,
                                   "candidate_keep_rate": decision.candidate.keep_rate,
                                   "candidate_images": decision.candidate.images,
                                   "control_keep_rate": decision.control.keep_rate,
                                   "control_images": decision.control.images, "interval": list(decision.interval)}
        return out

    def _export(self, run: TrainingRun, now: datetime, reporter: _Reporter) -> dict[str, Any]:
        since = self._window_start()
        folder = self._run_dir(run) / "data"
        shutil.rmtree(folder, ignore_errors=True)
        # [since, now): the next cycle's window starts at this run's data_until (now), so no row is in two.
        results = export_datasets(_DATASETS, self.storage.db_engine, folder, since=since, until=now,
                                  blobs=self.storage.blobs)
        files = [folder / kind / "data.parquet" for kind in _DATASETS]
        return {"since": since.isoformat() if since else None, "until": now.isoformat(), "folder": str(folder),
                "rows": {r.kind: r.rows for r in results}, "data_hash": snapshot_hash(files)}

    def _window_start(self) -> datetime | None:
        """Where this cycle's export starts: the oldest of each training stage's own window, None for everything.

        A stage's window starts where the newest cycle in which it trained ended. A stage skipped for too few
        pairs keeps its window open, so its data accumulates until it suffices (another stage that trained
        meanwhile sees that older data again, as replay); a stage switched off or unsupported is left out.
        """
        starts: list[datetime | None] = []
        for stage in TRAINED_STAGES:
            if stage.switched_off(self.settings):
                continue
            name = stage.name
            latest = self.runs.last_finished_where(RunKind.CYCLE, partial(_ran, stage=name))
            if latest is None or not (_trained(latest, name) or _starved(latest, name)):
                continue
            trained = latest if _trained(latest, name) else self.runs.last_finished_where(
                RunKind.CYCLE, partial(_trained, stage=name))
            starts.append(trained.data_until if trained is not None else None)
        if not starts:  # no cycle yet, or every stage off: the window starts where the last cycle ended
            previous = self.runs.last_finished(RunKind.CYCLE)
            return previous.data_until if previous is not None else None
        if any(start is None for start in starts):
            return None
        return min(start for start in starts if start is not None)

    def _expander(self, run: TrainingRun, now: datetime, reporter: _Reporter) -> dict[str, Any]:
        """Train a fresh adapter on the whole record (top-K kept intents) and gate it on held-out intents: does it
        produce the scene values people kept for them, more often than what is served now?"""
        from imageloop.training.expander import ExpanderTrainer

        cfg = self.settings.training
        done = self.registry.find_by_run(run.id, ModelKind.EXPANDER)
        if done is not None:  # trained and registered before an interruption
            return self._decided(done)
        off = _expander_off(self.settings)
        if off:
            return {"skipped": off}
        data = expander_data(self.storage, self._run_dir(run) / "expander-data", until=now, settings=self.settings)
        if len(data.sft) < cfg.min_pairs:
            return {"skipped": f"{len(data.sft)} kept intents for training (need {cfg.min_pairs})",
                    "counts": data.counts()}
        short = too_little_heldout(len(data.gated), cfg.min_heldout_items)
        if short is not None:
            return {"skipped": short, "counts": data.counts()}
        model, tokenizer = self.expander_loader(self.settings)
        current = self.registry.current(ModelKind.EXPANDER)
        parent = self.registry.path(current) if current is not None else None
        out_dir = self._run_dir(run) / "expander"
        shutil.rmtree(out_dir, ignore_errors=True)
        peft_model = ExpanderTrainer(model, tokenizer, self.settings).train(
            data.sft, data.dpo, out_dir, on_progress=reporter.within(0.0, 0.8))
        reporter.report_stage(0.8, "expander: answering held-out intents")
        gate, metrics = gate_expander(peft_model, tokenizer, data, parent, self.settings)
        version = self.registry.register(
            ModelKind.EXPANDER, out_dir / "adapter", name="expander-lora", data_hash=data.data_hash,
            metrics={"gate": gate.to_dict(), "data": data.counts(), **metrics},
            parent_id=current.id if current else None, run_id=run.id,
        )
        return self._decide(version, gate)

    def _reward(self, run: TrainingRun, now: datetime, reporter: _Reporter) -> dict[str, Any]:
        from imageloop.training.reward import (
            clip_start,
            heldout_metrics,
            load_reward_model,
            pair_margins,
            save_reward_model,
            train_reward_variants,
        )

        cfg = self.settings.training
        data = self._data(run)
        done = self.registry.find_by_run(run.id, ModelKind.REWARD)
        if done is not None:
            return self._decided(done)
        if len(data.pairs_train) < cfg.min_pairs:
            return {"skipped": f"{len(data.pairs_train)} image pairs for training (need {cfg.min_pairs})",
                    "counts": data.counts()}
        short = too_little_heldout(len(data.pairs_test), cfg.min_heldout_items)
        if short is not None:
            return {"skipped": short, "counts": data.counts()}
        current = self.registry.current(ModelKind.REWARD)
        parent = load_reward_model(self.registry.path(current)) if current is not None else None
        clip = clip_start(parent, cfg)
        model, variants = train_reward_variants(data.pairs_train, data.labels_train, data.pairs_test,
                                                epochs=cfg.reward_epochs, parent=parent, clip=clip,
                                                on_progress=reporter.within(0.0, 0.9))
        candidate = correctness(pair_margins(model, data.pairs_test))
        baseline = correctness(pair_margins(parent, data.pairs_test)) if parent is not None else None
        gate = evaluate_gate(candidate, baseline, confidence=cfg.gate_confidence, min_pairs=cfg.min_heldout_items)
        heldout = {**heldout_metrics(model, data.pairs_test), "variants": variants}
        folder = save_reward_model(model, self._run_dir(run) / "reward", {"gate": gate.to_dict(), **heldout})
        version = self.registry.register(
            ModelKind.REWARD, folder, name=model.NAME, data_hash=self._data_hash(run),
            metrics={"gate": gate.to_dict(), **heldout, "data": data.counts(),
                     "baseline": "current" if parent else "chance"},
            parent_id=current.id if current else None, run_id=run.id,
        )
        return self._decide(version, gate)

    def _diffusion_dpo(self, run: TrainingRun, now: datetime, reporter: _Reporter) -> dict[str, Any]:
        from imageloop.engine.loader import load_model
        from imageloop.engine.recipes import LORA_FILE
        from imageloop.training.diffusion_dpo import DiffusionDpoConfig, preference_rows
        from imageloop.training.generator_stage import objectives_with_data, train_generator_variants

        cfg = self.settings.training
        done = self.registry.find_by_run(run.id, ModelKind.DIFFUSION_DPO)
        if done is not None:
            return self._decided(done)
        off = _diffusion_dpo_off(self.settings)
        if off:
            return {"skipped": off}
        data = self._data(run)
        train, ties = preference_rows(data.pairs_train)
        test, _ = preference_rows(data.pairs_test)
        objectives, short = objectives_with_data(cfg.diffusion_objective, len(train), data.labels_train,
                                                 cfg.diffusion_dpo_min_pairs)
        if not objectives:
            return {"skipped": short, "counts": data.counts()}
        few = too_little_heldout(len(test), cfg.min_heldout_items)
        if few is not None:
            return {"skipped": few, "counts": data.counts()}
        model = load_model(self.settings.engine.model, self.settings)
        try:
            model.require_sd15("Diffusion-DPO")
        except UnsupportedModelError as exc:
            return {"skipped": exc.message}
        current = self.registry.current(ModelKind.DIFFUSION_DPO)
        if current is not None and current.metrics.get("base_model_version") != model.version:
            current = None  # made for another base model: neither a starting point nor a baseline here
        parent = self.registry.path(current) / LORA_FILE if current is not None else None
        info = {"base_model": model.name, "base_model_version": model.version}
        best, variants = train_generator_variants(
            model.pipe, objectives, train, data.labels_train, test, DiffusionDpoConfig.from_settings(cfg),
            self._run_dir(run), width=model.defaults.width, height=model.defaults.height, parent=parent,
            confidence=cfg.gate_confidence, min_pairs=cfg.min_heldout_items, info=info,
            on_progress=reporter.within(0.0, 1.0))
        version = self.registry.register(
            ModelKind.DIFFUSION_DPO, best.out_dir, name=f"diffusion-{best.objective}-lora",
            data_hash=self._data_hash(run),
            metrics={"gate": best.gate.to_dict(), "data": {**data.counts(), "ties_left_out": ties}, **best.heldout,
                     "objective": best.objective, "variants": variants,
                     "baseline": "current" if parent else "base UNet (chance)", **info, "steps": best.result.steps,
                     "train_accuracy": best.result.train_accuracy},
            parent_id=current.id if current else None, run_id=run.id,
        )
        return self._decide(version, best.gate)

    def _finish(self, run: TrainingRun, now: datetime, reporter: _Reporter) -> dict[str, Any]:
        # The exported data can be large (pairs hold JPEGs); the registry keeps what matters.
        shutil.rmtree(self._run_dir(run) / "data", ignore_errors=True)
        return {"finished_at": self.clock().isoformat()}

    # -- helpers -----------------------------------------------------------------------------------------------------

    def _decide(self, version: ModelVersion, gate: GateResult) -> dict[str, Any]:
        if gate.passed:
            version = self.registry.release(version.id, note=gate.reason)
        else:
            version = self.registry.reject(version.id, gate.reason)
        return self._decided(version)

    def _decided(self, version: ModelVersion) -> dict[str, Any]:
        if version.status.value == "candidate":  # registered, then interrupted before the decision
            gate = version.metrics.get("gate", {})
            version = (self.registry.release(version.id, note=gate.get("reason")) if gate.get("passed")
                       else self.registry.reject(version.id, str(gate.get("reason", "no gate result"))))
        return {"version_id": version.id, "version": version.version, "status": version.status.value,
                "gate": version.metrics.get("gate")}

    def _run_dir(self, run: TrainingRun) -> Any:
        return self.settings.data_dir / "training" / "runs" / run.id

    def _data(self, run: TrainingRun) -> CycleData:
        cfg = self.settings.training
        return CycleData.load(self._run_dir(run) / "data", top_k=cfg.top_k_intents,
                              heldout_fraction=cfg.heldout_fraction)

    def _data_hash(self, run: TrainingRun) -> str:
        return str(self.runs.get(run.id).state.get("export", {}).get("data_hash", ""))


def _expander_off(settings: Settings) -> str | None:
    if "local_llm" in settings.prompts.strategies:
        return None
    return "prompts.strategies leaves out local_llm, the only strategy that serves the adapters"


def _diffusion_dpo_off(settings: Settings) -> str | None:
    return None if settings.training.diffusion_dpo_enabled else "training.diffusion_dpo_enabled is off"


STAGES: tuple[Stage, ...] = (
    Stage("ab_tests", None, 0.02, TrainingCycle._ab_tests),
    Stage("export", None, 0.08, TrainingCycle._export),
    Stage("expander", ModelKind.EXPANDER, 0.5, TrainingCycle._expander, _expander_off),
    Stage("reward", ModelKind.REWARD, 0.18, TrainingCycle._reward),
    Stage("diffusion_dpo", ModelKind.DIFFUSION_DPO, 0.2, TrainingCycle._diffusion_dpo, _diffusion_dpo_off),
    Stage("finish", None, 0.02, TrainingCycle._finish),
)
TRAINED_STAGES = tuple(stage for stage in STAGES if stage.trains is not None)
_STAGE_NAMED = {stage.name: stage for stage in STAGES}


class _Reporter:
    """Turns stage-local progress into overall progress: calls the caller's callback, writes the run row and
    renews the lock (both at most every few seconds), and stops the cycle when asked to."""

    WRITE_EVERY = 2.0

    def __init__(self, cycle: TrainingCycle, run_id: str, owner: str, callback: ProgressFn | None) -> None:
        self.cycle = cycle
        self.run_id = run_id
        self.owner = owner
        self.callback = callback
        self.stage = STAGES[0]
        self._last_write = 0.0

    def enter(self, stage: Stage) -> None:
        self.stage = stage
        self.report_stage(0.0, f"{stage.name}: started")

    def report_stage(self, fraction: float, message: str) -> None:
        start = sum(stage.progress_share for stage in STAGES[: STAGES.index(self.stage)])
        self.report(start + self.stage.progress_share * min(max(fraction, 0.0), 1.0), message)

    def within(self, start: float, end: float) -> ProgressFn:
        return lambda fraction, message: self.report_stage(start + (end - start) * fraction, message)

    def report(self, overall: float, message: str) -> None:
        if self.cycle.stop.is_set():
            raise CycleInterrupted("the cycle was asked to stop")
        if self.callback is not None:
            self.callback(overall, message)
        if time.monotonic() - self._last_write >= self.WRITE_EVERY or overall >= 1.0:
            self._last_write = time.monotonic()
            self.cycle.runs.update(self.run_id, progress=overall, message=message)
            self.cycle.lock.renew(self.owner)


def _ran(run: TrainingRun, stage: str) -> bool:
    return stage in run.state


def _trained(run: TrainingRun, stage: str) -> bool:
    return stage in run.state and "skipped" not in run.state[stage]


def _starved(run: TrainingRun, stage: str) -> bool:
    """Whether ``stage`` was skipped for too little data (such skips carry the data counts)."""
    return "counts" in run.state.get(stage, {})


def _summary(state: dict[str, Any]) -> dict[str, Any]:
    return {stage.name: state[stage.name] for stage in TRAINED_STAGES if stage.name in state}


def run_cycle(
    settings: Settings,
    *,
    now: datetime | None = None,
    on_progress: ProgressFn | None = None,
    trigger: str = "manual",
    storage: Storage | None = None,
    expander_loader: ExpanderLoader | None = None,
) -> CycleResult:
    """Run one training cycle for ``settings`` (opening storage unless given) with the data up to ``now``
    (default: the current time). A given ``now`` is also the clock of everything the cycle records (run times,
    A/B start, promotions), so a simulation with its own clock stays consistent. See :class:`TrainingCycle`."""
    own = storage is None
    store = storage if storage is not None else Storage.open(settings)
    clock: Callable[[], datetime] = (lambda: now) if now is not None else utcnow
    try:
        return TrainingCycle(settings, store, expander_loader=expander_loader, clock=clock).run(
            now=now, trigger=trigger, on_progress=on_progress)
    finally:
        if own:
            store.close()
