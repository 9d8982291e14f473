"""The machine a benchmark ran on, written into every result JSON: CPUs and the load average at its start and end.

This CPU may be shared: a figure means something only beside how busy the machine was. The load at the start (before
the benchmark adds its own) decides whether the machine was ``quiet``; a result measured on a busy machine says so,
and is re-run before it is quoted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

__all__ = ["QUIET_LOAD_PER_CPU", "MachineWatch", "load_average"]

QUIET_LOAD_PER_CPU = 0.5  # 1-minute load per CPU below which the machine counts as quiet before a run


def load_average() -> tuple[float, float, float]:
    """The 1-, 5- and 15-minute load averages (zeros where the platform has none)."""
    try:
        return os.getloadavg()
    except OSError:
        return (0.0, 0.0, 0.0)


@dataclass
class MachineWatch:
    """Started before a benchmark runs; :meth:`record` gives the ``machine`` entry of its result."""

    cpus: int = field(default_factory=lambda: os.cpu_count() or 1)
    start: tuple[float, float, float] = field(default_factory=load_average)

    @property
    def quiet(self) -> bool:
        return self.start[0] < QUIET_LOAD_PER_CPU * self.cpus

    def record(self) -> dict[str, Any]:
        """CPUs, load averages at the start and now, and whether the machine was quiet when the run began."""
        return {"cpus": self.cpus, "load_average_start": [round(x, 2) for x in self.start],
                "load_average_end": [round(x, 2) for x in load_average()], "quiet": self.quiet}

    def warning(self) -> str | None:
        """A line to print when the machine was busy at the start, else None."""
        if self.quiet:
            return None
        return (f"the machine was busy when this began (load {self.start[0]:.1f} on {self.cpus} CPUs): "
                "re-run on a quiet machine before quoting these figures")
