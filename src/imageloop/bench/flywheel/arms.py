"""The arms of the flywheel simulation: the same users and seeds against differently configured services.

``frozen`` is the system that learns nothing from its users: no training cycles, and neither retrieval over kept
prompts nor re-ranking toward a user's kept images (the online half of the loop). ``full`` has both halves: the
online memory and the real training cycle at the end of every simulated week. ``online`` is the system as shipped
learning only online: retrieval and memory on, no training cycles; ``online`` vs ``frozen`` is what the online half
adds, ``full`` vs ``online`` what the weekly retraining adds on top (not a default arm: it costs a third run). The
ablations train too but switch one part off through settings: ``no_dpo`` (expander DPO steps 0 and no
Diffusion-DPO), ``no_memory`` (no re-ranking toward a user's kept images), ``no_retrieval`` (the retrieval strategy
is left out of the chain).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from imageloop.errors import UnknownNameError

__all__ = ["ARMS", "DEFAULT_ARMS", "Arm", "parse_arms"]


@dataclass(frozen=True)
class Arm:
    """One arm: whether it trains weekly and the settings it changes (nested dicts merged into the base)."""

    name: str
    trains: bool
    prompts: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    without_strategies: tuple[str, ...] = ()
    description: str = ""


ARMS: dict[str, Arm] = {
    "frozen": Arm("frozen", trains=False, prompts={"personalization": False}, without_strategies=("retrieval",),
                  description="learns nothing: no training, no retrieval or re-ranking over kept prompts"),
    "full": Arm("full", trains=True, description="the whole flywheel: weekly cycles, memory, retrieval"),
    "online": Arm("online", trains=False,
                  description="learns online only: retrieval and memory over kept prompts, no training cycles"),
    "no_dpo": Arm("no_dpo", trains=True, training={"dpo_max_steps": 0, "diffusion_dpo_enabled": False},
                  description="cycles without DPO (neither the expander's nor Diffusion-DPO)"),
    "no_memory": Arm("no_memory", trains=True, prompts={"personalization": False},
                     description="no re-ranking toward the user's kept images"),
    "no_retrieval": Arm("no_retrieval", trains=True, without_strategies=("retrieval",),
                        description="no retrieval over kept prompts"),
}
DEFAULT_ARMS = ("frozen", "full")


def parse_arms(text: str) -> list[Arm]:
    """``"frozen,full"`` -> the arms, in order, without repeats; UnknownNameError for a name not in ARMS."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    for name in names:
        if name not in ARMS:
            raise UnknownNameError("arms", name, sorted(ARMS))
    if not names:
        raise UnknownNameError("arms", text, sorted(ARMS))
    return [ARMS[n] for n in dict.fromkeys(names)]
