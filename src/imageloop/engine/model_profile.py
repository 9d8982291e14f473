"""What the served model is and which request settings apply to it, read from its files without loading weights.

:func:`model_profile` names the family ("sd15", "sdxl", "flux", "sd3"), a label people know it by ("FLUX.1 dev",
"FLUX.1 schnell": schnell has no guidance embedding), what the model needs beside its weights, the samplers that
apply, and for each optional control (negative prompt, sampler, clip skip, ControlNet, IP-Adapter) whether it
applies and, when not, why. The web page hides the controls that do not apply and shows the reason; the engine
refuses the same settings by name (see :mod:`imageloop.engine.families`). A guidance-embedded (LCM-distilled) SD model,
labelled "SD1.5 (guidance-embedded)", takes a negative prompt and its rule says what it costs (a second UNet pass).
A closed-vocabulary model (the embedded one) also says what it knows: its ``knows.json``
(:mod:`imageloop.engine.model_knowledge`); an open-vocabulary one has none.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from imageloop.config import Settings
from imageloop.engine.families import FLOW_SCHEDULERS, NEGATIVE_SECOND_PASS, has_negative_prompt, is_flow_family
from imageloop.engine.model_knowledge import ModelKnowledge, read_knowledge
from imageloop.engine.schedulers import SCHEDULER_NAMES
from imageloop.errors import ImageloopError

FAMILY_LABELS = {"sd15": "SD1.5", "sdxl": "SDXL", "flux": "FLUX.1", "sd3": "SD3"}
CONTROL_NAMES = ("negative_prompt", "scheduler", "clip_skip", "controlnet", "ip_adapter")
# Tensor names of FLUX.1's guidance embedding (BFL layout, diffusers layout): dev has it, schnell does not.
_GUIDANCE_KEYS = ("guidance_in.", "guidance_embedder.")
_TEXT_ENCODERS = {
    "sd15": "a CLIP-L text encoder", "sdxl": "CLIP-L and CLIP-G text encoders",
    "flux": "CLIP-L and T5-XXL text encoders", "sd3": "CLIP-L, CLIP-G and (optional) T5-XXL text encoders",
}


@dataclass(frozen=True)
class ControlRule:
    """Whether one optional request setting applies to the model; ``why`` says why not, or what part of it does
    not (the samplers of a flow model); None when all of it applies."""

    name: str
    applies: bool
    why: str | None = None


@dataclass(frozen=True)
class ModelProfile:
    """The served model as a request sees it: family, label, needs, samplers and the controls that apply."""

    name: str
    family: str | None
    label: str
    needs: tuple[str, ...]
    samplers: tuple[str, ...]
    controls: tuple[ControlRule, ...]
    problem: str | None = None
    guidance_embedded: bool = False  # an SD-family UNet that takes the guidance as an embedding (LCM-distilled)
    native_side: int | None = None  # the longer side it makes by default, in pixels
    knows: ModelKnowledge | None = None  # a closed-vocabulary model's subjects, attributes and trained size


def _flux_has_guidance(path: Path) -> bool:
    """Whether a FLUX.1 folder or transformer file has the guidance embedding (dev) or not (schnell)."""
    from imageloop.engine.model_files import read_checkpoint_keys

    if path.is_dir():
        config = json.loads((path / "transformer" / "config.json").read_text(encoding="utf-8"))
        return bool(config.get("guidance_embeds", False))
    return any(marker in key for key in read_checkpoint_keys(path) for marker in _GUIDANCE_KEYS)


def _label(family: str, path: Path, guidance_embedded: bool) -> str:
    if guidance_embedded:
        return f"{FAMILY_LABELS.get(family, family)} (guidance-embedded)"
    if family != "flux":
        return FAMILY_LABELS.get(family, family)
    try:
        return "FLUX.1 dev" if _flux_has_guidance(path) else "FLUX.1 schnell"
    except (ImageloopError, OSError, ValueError):
        return "FLUX.1"


def _needs(family: str, path: Path, settings: Settings) -> tuple[str, ...]:
    needs: list[str] = []
    if path.is_file():
        config = settings.engine.model_config_dir
        if config is not None:
            needs.append(f"its config folder {config.name}")
        elif is_flow_family(family):
            needs.append("a diffusers config folder with its text encoders and VAE (engine.model_config_dir)")
        else:
            needs.append("the shipped config folder (or engine.model_config_dir)")
    needs.append(_TEXT_ENCODERS.get(family, "its text encoder"))
    if family == "flux":
        needs.append("a low guidance_scale: it is FLUX.1's distilled guidance, not CFG")
    return tuple(needs)


def _negative_rule(family: str, guidance_embedded: bool) -> ControlRule:
    if not has_negative_prompt(family):
        return ControlRule("negative_prompt", False,
                           "FLUX.1 has no negative prompt (guidance-distilled: no unconditional pass)")
    if guidance_embedded:
        return ControlRule("negative_prompt", True, NEGATIVE_SECOND_PASS)
    return ControlRule("negative_prompt", True)


def _controls(family: str, label: str, settings: Settings, guidance_embedded: bool) -> tuple[ControlRule, ...]:
    flow = is_flow_family(family)
    rules = [
        _negative_rule(family, guidance_embedded),
        # On flow models the sampler stays, with Euler its only choice.
        ControlRule("scheduler", True) if not flow else ControlRule(
            "scheduler", True, f"{label} denoises with flow-matching Euler: the other samplers do not apply"),
        ControlRule("clip_skip", True) if not flow else ControlRule(
            "clip_skip", False, f"clip skip does not apply to {label} (T5/joint text encoders)"),
    ]
    if flow:
        rules.append(ControlRule("controlnet", False, f"ControlNet is not supported for {label} yet"))
    elif settings.engine.controlnet is None:
        rules.append(ControlRule("controlnet", False, "no ControlNet is configured (engine.controlnet)"))
    else:
        rules.append(ControlRule("controlnet", True))
    if flow:
        rules.append(ControlRule("ip_adapter", False, f"IP-Adapter runs on SD1.5 and SDXL only, not {label}"))
    elif settings.engine.ip_adapter is None:
        rules.append(ControlRule("ip_adapter", False, "no IP-Adapter is configured (engine.ip_adapter)"))
    else:
        rules.append(ControlRule("ip_adapter", True))
    return tuple(rules)


def model_profile(spec: str | Path, settings: Settings) -> ModelProfile:
    """The profile of model ``spec`` (see the module docstring). A model whose files cannot be read has no family,
    ``problem`` says why, and every control is shown (loading it then fails with the same reason)."""
    from imageloop.engine.model_files import (
        detect_architecture,
        folder_embeds_guidance,
        native_size,
        resolve_model_source,
    )

    name = Path(str(spec)).stem if Path(str(spec)).suffix else Path(str(spec)).name
    try:
        path = resolve_model_source(spec, settings)
        family = detect_architecture(path).value
        knows = read_knowledge(path) if path.is_dir() else None
    except ImageloopError as exc:
        rules = tuple(ControlRule(control, True) for control in CONTROL_NAMES)
        return ModelProfile(name, None, "unknown", (), SCHEDULER_NAMES, rules, problem=exc.message)
    embedded = folder_embeds_guidance(path)
    label = _label(family, path, embedded)
    samplers = FLOW_SCHEDULERS if is_flow_family(family) else SCHEDULER_NAMES
    return ModelProfile(name, family, label, _needs(family, path, settings), samplers,
                        _controls(family, label, settings, embedded), guidance_embedded=embedded,
                        native_side=native_size(path, settings), knows=knows)
