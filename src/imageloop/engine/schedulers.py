"""AUTOMATIC1111 sampler names mapped to diffusers schedulers.

A1111 names a sampler and its noise schedule together ("DPM++ 2M Karras"); diffusers has one scheduler class per
solver with options for the schedule. :data:`SCHEDULERS` is that table, and :func:`make_scheduler` builds a
scheduler from a model's own scheduler config (so betas, prediction type and timestep spacing stay the model's)
with the options that make it the named sampler.

A1111 1.9+ and Forge write the sampler and its schedule apart (``Sampler: DPM++ SDE, Schedule type: Karras``).
Any listed sampler whose diffusers class supports a schedule also takes one of :data:`SCHEDULES` after its name
("DPM++ 2M Exponential", "Euler SGM Uniform"); :func:`sampler_with_schedule` joins the two A1111 fields.
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
        SchedulerSpec("DPM++ 2M SDE Heun", "DPMSolverMultistepScheduler", {**sde, "solver_type": "heun"},
                      stochastic=True),
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
        # Needs torchsde; seeded per image through the scheduler's Brownian tree (see seed_noise_sampler).
        SchedulerSpec("DPM++ SDE", "DPMSolverSDEScheduler", stochastic=True),
        SchedulerSpec("DPM++ SDE Karras", "DPMSolverSDEScheduler", karras, stochastic=True),
        # Single-step DPM-Solver++ (2S); diffusers has no ancestral form of it (A1111's "DPM++ 2S a").
        SchedulerSpec("DPM++ 2S", "DPMSolverSinglestepScheduler", dpm),
        SchedulerSpec("DPM++ 2S Karras", "DPMSolverSinglestepScheduler", {**dpm, **karras}),
    ]
    return {spec.name: spec for spec in specs}


SCHEDULERS: dict[str, SchedulerSpec] = _specs()
SCHEDULER_NAMES: tuple[str, ...] = tuple(SCHEDULERS)
_BY_LOWER = {name.lower(): name for name in SCHEDULERS}

# A1111/Forge "Schedule type" values diffusers can follow, as scheduler options. Uniform/Normal space the timesteps
# evenly over the whole range (k-diffusion's get_sigmas), SGM Uniform/Simple end on the last timestep ("trailing").
SCHEDULES: dict[str, dict[str, Any]] = {
    "Karras": {"use_karras_sigmas": True},
    "Exponential": {"use_exponential_sigmas": True},
    "Beta": {"use_beta_sigmas": True},
    "Uniform": {"timestep_spacing": "linspace"},
    "Normal": {"timestep_spacing": "linspace"},
    "SGM Uniform": {"timestep_spacing": "trailing"},
    "Simple": {"timestep_spacing": "trailing"},
}
_SCHEDULE_BY_LOWER = {name.lower(): name for name in SCHEDULES}
# A1111 1.9+: the schedule "Automatic" picks for these samplers (the others use their own default).
_AUTOMATIC_SCHEDULE = {"DPM++ 2M": "Karras", "DPM++ SDE": "Karras", "DPM++ 2S": "Karras",
                       "DPM++ 2M SDE": "Exponential", "DPM++ 2M SDE Heun": "Exponential",
                       "DPM++ 3M SDE": "Exponential"}


def _split_schedule(name: str) -> tuple[str, str] | None:
    """(listed sampler, schedule) for a composed name such as "Euler SGM Uniform", when the class takes it."""
    lowered = name.lower()
    for schedule_lower, schedule in _SCHEDULE_BY_LOWER.items():
        base = _BY_LOWER.get(lowered.removesuffix(" " + schedule_lower)) if lowered.endswith(
            " " + schedule_lower) else None
        if base is None or any(flag in SCHEDULERS[base].options for flag in _SCHEDULE_FLAGS):
            continue
        accepted = set(inspect.signature(SCHEDULERS[base].scheduler_class.__init__).parameters)
        if set(SCHEDULES[schedule]) <= accepted:
            return base, schedule
    return None


def canonical_scheduler_name(name: str, field_name: str = "scheduler") -> str:
    """Return the A1111 spelling of ``name`` (matched case-insensitively), a listed sampler or one followed by a
    schedule its class supports (see :data:`SCHEDULES`); UnknownNameError lists the known ones."""
    spaced = " ".join(name.split())
    canonical = _BY_LOWER.get(spaced.lower())
    if canonical is not None:
        return canonical
    composed = _split_schedule(spaced)
    if composed is None:
        raise UnknownNameError(field_name, name, SCHEDULER_NAMES)
    return f"{composed[0]} {composed[1]}"


def scheduler_spec(name: str) -> SchedulerSpec:
    """The spec of a listed or composed sampler name; UnknownNameError if it is neither."""
    canonical = canonical_scheduler_name(name)
    spec = SCHEDULERS.get(canonical)
    if spec is not None:
        return spec
    composed = _split_schedule(canonical)
    assert composed is not None
    base = SCHEDULERS[composed[0]]
    return SchedulerSpec(canonical, base.class_name, {**base.options, **SCHEDULES[composed[1]]}, base.stochastic)


def sampler_with_schedule(sampler: str, schedule: str | None) -> tuple[str, str | None]:
    """Join A1111's ``Sampler`` and ``Schedule type`` into one of our names, and say what could not be followed.

    Returns (scheduler name, note); the note is None when the pair is honoured as written, else it says what was
    done instead. UnknownNameError when the sampler itself is unknown.
    """
    note = None
    approximate = _APPROXIMATE.get(" ".join(sampler.split()).lower())
    if approximate is not None:
        sampler, note = approximate
    base, schedule_note = _join(canonical_scheduler_name(sampler, "Sampler"), schedule)
    return base, "; ".join(text for text in (note, schedule_note) if text) or None


# A1111 samplers diffusers lacks, run as the nearest one it has (the note says which).
_APPROXIMATE = {
    "dpm++ 2s a": ("DPM++ 2S", "diffusers has no ancestral DPM++ 2S; DPM++ 2S (not ancestral) was used"),
    "dpm++ 2s a karras": ("DPM++ 2S Karras", "diffusers has no ancestral DPM++ 2S; DPM++ 2S Karras (not ancestral) "
                          "was used"),
}


def _join(base: str, schedule: str | None) -> tuple[str, str | None]:
    if not schedule:  # A1111 before 1.9 and our own PNGs: the sampler name is the whole choice
        return base, None
    if schedule.lower() == "automatic":
        automatic = _AUTOMATIC_SCHEDULE.get(base)
        return (f"{base} {automatic}" if automatic else base), None
    if any(base.endswith(" " + known) for known in SCHEDULES):
        if base.lower().endswith(" " + schedule.lower()):
            return base, None
        return base, f"the sampler name already holds its schedule; Schedule type {schedule!r} not applied"
    known = _SCHEDULE_BY_LOWER.get(schedule.lower())
    if known is None:
        return base, f"diffusers has no {schedule!r} schedule; the sampler's own schedule was used"
    try:
        return canonical_scheduler_name(f"{base} {known}"), None
    except UnknownNameError:
        return base, f"{base} cannot take the {known} schedule in diffusers; its own schedule was used"


def make_scheduler(name: str, model_config: Mapping[str, Any]) -> Any:
    """A fresh scheduler for sampler ``name``, built on ``model_config`` (the model's own scheduler config).

    The model's betas, prediction type and timestep spacing are kept; solver options that another sampler may have
    set in the stored config (Karras sigmas, solver order, algorithm) are replaced by this sampler's.
    """
    spec = scheduler_spec(name)
    scheduler_class = spec.scheduler_class
    accepted = set(inspect.signature(scheduler_class.__init__).parameters)
    options: dict[str, Any] = {flag: False for flag in _SCHEDULE_FLAGS if flag in accepted}
    options.update({key: value for key, value in spec.options.items() if key in accepted})
    # diffusers drops values listed in "_use_default_values" when switching classes; the model's effective config
    # (including values it got by default) is what we mean to keep, so drop that list instead.
    config = {key: value for key, value in model_config.items() if key not in options and key != "_use_default_values"}
    return scheduler_class.from_config(config, **options)


def scheduler_name_for(scheduler: Any) -> str | None:
    """The A1111 name that best describes an existing scheduler object, or None if none matches its class."""
    config = dict(scheduler.config)
    # The most specific spec first: "DPM++ 2M SDE Heun" before the "DPM++ 2M SDE" whose options it also has.
    for spec in sorted(SCHEDULERS.values(), key=lambda spec: -len(spec.options)):
        if type(scheduler).__name__ != spec.class_name:
            continue
        if all(config.get(key) == value for key, value in spec.options.items()) and not any(
            config.get(flag) for flag in _SCHEDULE_FLAGS if flag not in spec.options
        ):
            return spec.name
    return None


def seed_noise_sampler(scheduler: Any, seeds: list[int]) -> None:
    """Seed a scheduler that draws its noise from its own sampler (DPM++ SDE's Brownian tree) with one seed per
    image, so its images repeat with their seeds; other schedulers take the pipeline's generators and are left."""
    if hasattr(scheduler, "noise_sampler_seed"):
        scheduler.noise_sampler_seed = list(seeds)
        scheduler.noise_sampler = None
