"""Statistics and output of the flywheel simulation: Wilson intervals, the week-6 gap, table, JSON and PNG."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["GROUPS", "ArmWeek", "difference_interval", "plot_keep_rate", "print_table", "wilson", "write_json"]

Z95 = 1.959963984540054
# How a week's sessions are split: by intent (plain words, or a community phrase) and by user (in their first
# week, or back from an earlier one). Each session is in one group of each pair; newcomer_slang is the slang
# sessions of newcomers (what only learning from OTHER users can help).
GROUPS = ("plain", "slang", "newcomer", "returning", "newcomer_slang")
PLOTTED = (("all sessions", None), ("slang sessions", "slang"), ("plain sessions", "plain"),
           ("newcomers' slang sessions", "newcomer_slang"))


def wilson(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion; (0, 1) when there are no trials."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def difference_interval(k1: int, n1: int, k2: int, n2: int, z: float = Z95) -> tuple[float, float, float]:
    """Newcombe's hybrid score interval (from two Wilson intervals) of p1 - p2: (difference, low, high)."""
    p1 = k1 / n1 if n1 else 0.0
    p2 = k2 / n2 if n2 else 0.0
    l1, u1 = wilson(k1, n1, z)
    l2, u2 = wilson(k2, n2, z)
    diff = p1 - p2
    low = diff - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = diff + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return diff, low, high


@dataclass(frozen=True)
class ArmWeek:
    """One arm's week, counted from the service's own records (sessions = intents sent that week)."""

    arm: str
    week: int
    sessions: int
    kept: int
    rerolls: int
    rerolls_kept: int
    failed: int
    groups: dict[str, tuple[int, int]] = field(default_factory=dict)  # group -> (sessions, kept), see GROUPS

    @property
    def keep_rate(self) -> float:
        return self.kept / self.sessions if self.sessions else 0.0

    @property
    def rerolls_per_kept(self) -> float | None:
        """Rerolls (regenerate + edit) spent in sessions that ended kept, per kept image; None with none kept."""
        return self.rerolls_kept / self.kept if self.kept else None

    def to_dict(self) -> dict[str, Any]:
        low, high = wilson(self.kept, self.sessions)
        groups = {name: _rate(*self.groups.get(name, (0, 0))) for name in GROUPS}
        return {**asdict(self), "keep_rate": self.keep_rate, "ci95": [low, high],
                "rerolls_per_kept": self.rerolls_per_kept, "groups": groups}


def _rate(sessions: int, kept: int) -> dict[str, Any]:
    low, high = wilson(kept, sessions)
    return {"sessions": sessions, "kept": kept, "keep_rate": kept / sessions if sessions else None,
            "ci95": [low, high]}


def _cell(sessions: int, kept: int) -> str:
    if not sessions:
        return "-"
    low, high = wilson(kept, sessions)
    return f"{kept}/{sessions} {kept / sessions:.0%} ({low:.0%}–{high:.0%})"


def print_table(rows: list[ArmWeek], console: Console | None = None) -> None:
    """Keep rate (95% CI) and rerolls per kept image, one row per arm and week."""
    table = Table(title="Flywheel simulation: keep rate per week")
    for column in ("arm", "week", "sessions", "kept", "keep rate", "95% CI", "rerolls/kept", "failed"):
        table.add_column(column, justify="left" if column == "arm" else "right")
    for row in rows:
        low, high = wilson(row.kept, row.sessions)
        per_kept = row.rerolls_per_kept
        table.add_row(row.arm, str(row.week), str(row.sessions), str(row.kept), f"{row.keep_rate:.1%}",
                      f"{low:.1%}–{high:.1%}", "-" if per_kept is None else f"{per_kept:.2f}", str(row.failed))
    console = console or Console()
    console.print(table)
    if not any(row.groups for row in rows):
        return
    split = Table(title="Keep rate by session kind: kept/sessions, rate (95% Wilson CI)")
    for column in ("arm", "week", *GROUPS):
        split.add_column(column, justify="left" if column == "arm" else "right")
    for row in rows:
        split.add_row(row.arm, str(row.week), *(_cell(*row.groups.get(name, (0, 0))) for name in GROUPS))
    console.print(split)


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Write the result JSON (UTF-8, indented)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def plot_keep_rate(rows: list[ArmWeek], path: Path) -> Path:
    """Keep rate per week per arm with 95% Wilson intervals as a shaded band: all sessions, and each session kind
    of :data:`PLOTTED`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharex=True, sharey=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for axis, (title, group) in zip(axes.flat, PLOTTED, strict=True):
        for index, arm in enumerate(dict.fromkeys(r.arm for r in rows)):
            counts = [(r.week, *(r.groups.get(group, (0, 0)) if group else (r.sessions, r.kept)))
                      for r in rows if r.arm == arm]
            counts = [(week, n, k) for week, n, k in counts if n]
            if not counts:
                continue
            weeks = [week for week, _, _ in counts]
            bounds = [wilson(k, n) for _, n, k in counts]
            colour = colours[index % len(colours)]
            axis.plot(weeks, [100 * k / n for _, n, k in counts], marker="o", label=arm, color=colour)
            axis.fill_between(weeks, [100 * b[0] for b in bounds], [100 * b[1] for b in bounds], alpha=0.15,
                              color=colour)
        axis.set(title=title, xlabel="simulated week", ylabel="keep rate (%, 95% Wilson CI)")
        axis.grid(alpha=0.3)
        axis.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
