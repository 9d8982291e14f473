"""The training worker inside ``imageloop serve``: scheduled cycles, cycles asked for on demand, private LoRAs.

One background thread (training is CPU-heavy; one job at a time is what a shared machine can take). Each turn it:

1. runs a queued private-LoRA job, if any (oldest first);
2. looks at running A/B tests (at most every ``AB_CHECK_SECONDS``) and promotes or rolls back the ones whose keep
   rates are clear, so a test does not have to wait for the next cycle;
3. resumes an interrupted cycle, runs a cycle queued by the admin API, or runs a scheduled one when the cron
   expression ``training.schedule`` (UTC) says one is due since the last scheduled cycle (or since the worker
   started, the first time).

Stopping (the app's shutdown) interrupts a running cycle at its next progress report; its run is marked
interrupted and resumes at the next start. A cycle that another process is running is left to it (the lock).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from croniter import croniter

from imageloop.config import Settings
from imageloop.errors import ConfigError, ConflictError
from imageloop.storage import Storage
from imageloop.storage.records import utcnow
from imageloop.training.cycle import ExpanderLoader, TrainingCycle
from imageloop.training.lock import RunKind
from imageloop.training.registry import AB_TESTED_KINDS
from imageloop.training.stores import TrainingStores

__all__ = ["TrainingWorker", "next_run", "validate_schedule"]

log = logging.getLogger(__name__)

POLL_SECONDS = 5.0
AB_CHECK_SECONDS = 3600.0


def validate_schedule(expression: str) -> str:
    """``expression`` if it is a valid 5-field cron expression; ConfigError naming the setting otherwise."""
    if len(expression.split()) != 5 or not croniter.is_valid(expression):
        raise ConfigError(f"training.schedule: {expression!r} is not a cron expression (e.g. '0 3 * * 0' = "
                          "Sundays at 03:00 UTC)")
    return expression


def next_run(expression: str, after: datetime) -> datetime:
    """The first time the cron ``expression`` fires strictly after ``after`` (UTC)."""
    fire: datetime = croniter(validate_schedule(expression), after).get_next(datetime)
    return fire


class TrainingWorker:
    """Runs training work on one background thread (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        *,
        expander_loader: ExpanderLoader | None = None,
        clock: Callable[[], datetime] = utcnow,
        poll_seconds: float = POLL_SECONDS,
        stores: TrainingStores | None = None,
    ) -> None:
        validate_schedule(settings.training.schedule)
        self.settings = settings
        self.storage = storage
        self.clock = clock
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.stores = stores or TrainingStores.open(settings, storage, clock=clock)
        self.cycle = TrainingCycle(settings, storage, expander_loader=expander_loader, clock=clock, stop=self._stop,
                                   stores=self.stores)
        self.started_at = clock()
        self._ab_checked_at: datetime | None = None
        self._thread = threading.Thread(target=self._loop, name="imageloop-training", daemon=True)

    def start(self) -> None:
        """Start the thread (once)."""
        self.started_at = self.clock()
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Ask the thread to stop (a running cycle is interrupted at its next progress report) and wait."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def wake(self) -> None:
        """Look for work now instead of at the next poll (after queueing a run)."""
        self._wake.set()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def next_scheduled(self) -> datetime | None:
        """When the next scheduled cycle is due (None when the schedule is off)."""
        if not self.settings.training.schedule_enabled:
            return None
        last = self.cycle.runs.last_started(RunKind.CYCLE, trigger="schedule")
        base = last.started_at if last is not None and last.started_at is not None else self.started_at
        return next_run(self.settings.training.schedule, base)

    def run_once(self) -> str | None:
        """Do the next piece of work, if any; returns what was done ("lora", "cycle", "schedule") or None."""
        from imageloop.training.user_lora import run_next_user_lora

        if run_next_user_lora(self.settings, self.storage, clock=self.clock, stop=self._stop,
                              stores=self.stores) is not None:
            return "lora"
        self._check_ab_tests()
        pending = self.cycle.runs.resumable(RunKind.CYCLE)
        due = self.next_scheduled()
        if pending is None and (due is None or due > self.clock()):
            return None
        try:
            self.cycle.run(trigger="schedule" if pending is None else pending.trigger)
        except ConflictError as exc:
            log.info("training cycle not started: %s", exc.message)
            return None
        return "cycle" if pending is not None else "schedule"

    def _check_ab_tests(self) -> None:
        now = self.clock()
        if self._ab_checked_at is not None and (now - self._ab_checked_at).total_seconds() < AB_CHECK_SECONDS:
            return
        self._ab_checked_at = now
        for kind in sorted(AB_TESTED_KINDS):
            decision = self.cycle.registry.decide_ab_test(kind)
            if decision is not None and decision.action != "wait":
                log.info("A/B test of %s %s decided: %s", kind.value, decision.version_id, decision.action)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                did = self.run_once()
            except Exception:
                log.exception("training work failed (recorded in its run); the worker goes on")
                did = "failed"
            if did is None and not self._stop.is_set():
                self._wake.wait(self.poll_seconds)
                self._wake.clear()
