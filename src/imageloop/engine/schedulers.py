"""AUTOMATIC1111 sampler names mapped to diffusers schedulers.

A1111 names a sampler and its noise schedule together ("DPM++ 2M Karras"); diffusers has one scheduler class per
solver with options for the schedule. :data:`SCHEDULERS` is that table, and :func:`make_scheduler` builds a
scheduler from a model's own scheduler config (so betas, prediction type and timestep spacing stay the model's)
with the options that make it the named sampler.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from imageloop.errors import UnknownNameError

# Options that select a sigma schedule; reset to off unless a sampler asks for one, so a model whose stored config
# uses Karras sigmas still gives plain "Euler" when asked for it.
_SCHEDULE_FLAGS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")


@dataclass(frozen=True)
class SchedulerSpec:
    """One A1111 sampler: the diffusers class (by name, imported on use) and the options that make it that sampler."""

    name: str
    class_name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    stochastic: bool = False  # draws fresh noise each step (ancestral / SDE); still seeded by the generator

    @property
    def scheduler_class(self) -> type[Any]:
        """The diffusers scheduler class."""
        import diffusers  # heavy; request validation only needs the names

        cls: type[Any] = getattr(diffusers, self.class_name)
        return cls


def _specs() -> dict[str, SchedulerSpec]:
    karras = {"use_karras_sigmas": True}
    dpm = {"algorithm_type": "dpmsolver++", "solver_order": 2}
    sde = {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}
    specs = [
        SchedulerSpec("Euler", "EulerDiscreteScheduler"),
        SchedulerSpec("Euler Karras", "EulerDiscreteScheduler", karras),
        SchedulerSpec("Euler a", "EulerAncestralDiscreteScheduler", stochastic=True),
        SchedulerSpec("Heun", "HeunDiscreteScheduler"),
        SchedulerSpec("Heun Karras", "HeunDiscreteScheduler", karras),
        SchedulerSpec("LMS", "LMSDiscreteScheduler"),
        SchedulerSpec("LMS Karras", "LMSDiscreteScheduler", karras),
        SchedulerSpec("DPM2", "KDPM2DiscreteScheduler"),
        SchedulerSpec("DPM2 Karras", "KDPM2DiscreteScheduler", karras),
        SchedulerSpec("DPM2 a", "KDPM2AncestralDiscreteScheduler", stochastic=True),
        SchedulerSpec("DPM2 a Karras", "KDPM2AncestralDiscreteScheduler", karras, stochastic=True),
        SchedulerSpec("DPM++ 2M", "DPMSolverMultistepScheduler", dpm),
        SchedulerSpec("DPM++ 2M Karras", "DPMSolverMultistepScheduler", {**dpm, **karras}),
        SchedulerSpec("DPM++ 2M SDE", "DPMSolverMultistepScheduler", sde, stochastic=True),
        SchedulerSpec("DPM++ 2M SDE Karras", "DPMSolverMultistepScheduler", {**sde, **karras}, stochastic=True),
        SchedulerSpec("DPM++ 3M SDE", "DPMSolverMultistepScheduler", {**sde, "solver_order": 3}, stochastic=True),
        SchedulerSpec(
            "DPM++ 3M SDE Karras",
            "DPMSolverMultistepScheduler",
            {**sde, "solver_order": 3, **karras},
            stochastic=True,
        ),
        SchedulerSpec("DDIM", "DDIMScheduler", {"clip_sample": False, "set_alpha_to_one": False}),
        SchedulerSpec("DDPM", "DDPMScheduler", {"clip_sample": False}, stochastic=True),
        SchedulerSpec("PLMS", "PNDMScheduler", {"skip_prk_steps": True}),
        SchedulerSpec("UniPC", "UniPCMultistepScheduler", {"solver_order": 2}),
        SchedulerSpec("DEIS", "DEISMultistepScheduler", {"algorithm_type": "deis", "solver_order": 2}),
        SchedulerSpec("LCM", "LCMScheduler", stochastic=True),
    ]
    return {spec.name: spec for spec in specs}


SCHEDULERS: dict[str, SchedulerSpec] = _specs()
SCHEDULER_NAMES: tuple[str, ...] = tuple(SCHEDULERS)
_BY_LOWER = {name.lower(): name for name in SCHEDULERS}


def canonical_scheduler_name(name: str, field_name: str = "scheduler") -> str:
    """Return the A1111 spelling of ``name`` (matched case-insensitively); UnknownNameError lists the known ones."""
    canonical = _BY_LOWER.get(" ".join(name.split()).lower())
    if canonical is None:
        raise UnknownNameError(field_name, name, SCHEDULER_NAMES)
    return canonical


def make_scheduler(name: str, model_config: Mapping[str, Any]) -> Any:
    """A fresh scheduler for sampler ``name``, built on ``model_config`` (the model's own scheduler config).

    The model's betas, prediction type and timestep spacing are kept; solver options that another sampler may have
    set in the stored config (Karras sigmas, solver order, algorithm) are replaced by this sampler's.
    """
    spec = SCHEDULERS[canonical_scheduler_name(name)]
    scheduler_class = spec.scheduler_class
    accepted = set(inspect.signature(scheduler_class.__init__).parameters)
    options: dict[str, Any] = {flag: False for flag in _SCHEDULE_FLAGS if flag in accepted}
    options.update(spec.options)
    # diffusers drops values listed in "_use_default_values" when switching classes; the model's effective config
    # (including values it got by default) is what we mean to keep, so drop that list instead.
    config = {key: value for key, value in model_config.items() if key not in options and key != "_use_default_values"}
    return scheduler_class.from_config(config, **options)


def scheduler_name_for(scheduler: Any) -> str | None:
    """The A1111 name that best describes an existing scheduler object, or None if none matches its class."""
    config = dict(scheduler.config)
    for spec in SCHEDULERS.values():
        if type(scheduler).__name__ != spec.class_name:
            continue
        if all(config.get(key) == value for key, value in spec.options.items()) and not any(
            config.get(flag) for flag in _SCHEDULE_FLAGS if flag not in spec.options
        ):
            return spec.name
    return None
