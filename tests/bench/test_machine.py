"""Every benchmark result carries the machine's CPUs and load averages; a busy start is flagged."""

from __future__ import annotations

import pytest

from imageloop.bench import machine
from imageloop.bench.machine import MachineWatch


def test_a_watch_records_the_load_at_start_and_end(monkeypatch: pytest.MonkeyPatch) -> None:
    loads = iter([(0.4, 0.5, 0.6), (1.9, 1.0, 0.7)])
    monkeypatch.setattr(machine.os, "getloadavg", lambda: next(loads))
    watch = MachineWatch(cpus=2)
    record = watch.record()
    assert record == {"cpus": 2, "load_average_start": [0.4, 0.5, 0.6], "load_average_end": [1.9, 1.0, 0.7],
                      "quiet": True}  # the run's own load at the end does not make the start busy
    assert watch.warning() is None


def test_a_busy_start_is_flagged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(machine.os, "getloadavg", lambda: (3.2, 2.0, 1.0))
    watch = MachineWatch(cpus=2)
    assert not watch.record()["quiet"]
    assert "busy" in (watch.warning() or "") and "3.2 on 2 CPUs" in (watch.warning() or "")
