"""Preparing a request for the engine: what can be checked without a model, and the :class:`RunPlan` a request
resolves to on a loaded model (request, then recipe, then the model's defaults; the family's own rules), with the
LoRAs the run applies and how compatible plans are grouped into pipeline calls."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imageloop.config import Settings
from imageloop.engine.families import check_flow_request, check_flow_scheduler, is_flow_family
from imageloop.engine.ip_adapter import resolve_ip_adapter_path
from imageloop.engine.loader import LoadedModel, Mode
from imageloop.engine.recipes import LoraWeight, Recipe, RecipeStore, resolve_lora_path
from imageloop.engine.request import (
    DEFAULT_CONTROL_SCALE,
    DEFAULT_HIRES_STRENGTH,
    DEFAULT_IP_SCALE,
    DEFAULT_STRENGTH,
    MAX_SEED,
    BaseLora,
    GenerationRequest,
    check_limits,
    decode_image,
)
from imageloop.engine.schedulers import canonical_scheduler_name
from imageloop.errors import InvalidRequestError
from imageloop.prompts.styles import apply_style, get_style


@dataclass(frozen=True)
class RunPlan:
    """A resolved request plus what running it needs; every generation setting is non-optional here."""

    request: GenerationRequest
    recipe: Recipe | None
    random_seed: bool
    prompt: str  # after the style preset
    negative: str
    seed: int
    steps: int
    guidance_scale: float
    width: int
    height: int
    scheduler: str
    mode: Mode
    model_version: str  # the model's version, plus the tag of a base LoRA the plan applies
    unused: dict[str, str] = field(default_factory=dict)  # what the model did not use, and why, for the PNG

    def batch_key(self) -> tuple[Any, ...]:
        """Requests with equal keys can share one pipeline call."""
        recipe = self.recipe.model_dump_json() if self.recipe else None
        return self.steps, self.guidance_scale, self.width, self.height, self.scheduler, recipe, self.clip_skip

    @property
    def clip_skip(self) -> int:
        """Which text-encoder layer from the end conditions the run (A1111's Clip skip; 1 = the last)."""
        return self.request.clip_skip or 1

    @property
    def seeds(self) -> list[int]:
        """Image i of the batch uses seed + i (A1111's convention)."""
        return [self.seed + i for i in range(self.request.num_images)]


def named_recipe(request: GenerationRequest, recipes: RecipeStore) -> Recipe | None:
    """The recipe ``request`` carries (``with_recipe``, e.g. a user's private one), else the shared one it names."""
    if request.resolved_recipe is not None or request.recipe is None:
        return request.resolved_recipe
    return recipes.get(request.recipe)


def check_request(
    request: GenerationRequest, settings: Settings, recipes: RecipeStore, *, controlnet_spec: str | Path | None,
    ip_adapter_spec: str | Path | None, ip_adapter_loaded: bool,
) -> Recipe | None:
    """Check everything about ``request`` that needs no model (see ``Engine.check``); the recipe it names."""
    check_limits(request, settings)
    recipe = named_recipe(request, recipes)
    if recipe is not None and recipe.scheduler is not None:
        canonical_scheduler_name(recipe.scheduler, "recipe.scheduler")
    for lora in request.loras:
        resolve_lora_path(lora.file, settings.loras_dir)
    style = request.style or (recipe.style if recipe else None)
    if style is not None:
        get_style(style)
    if request.control_image is not None and controlnet_spec is None:
        raise InvalidRequestError("control_image", "no ControlNet model is configured",
                                  allowed="set --control-model PATH or IMAGELOOP_ENGINE__CONTROLNET")
    if request.ip_image is not None and ip_adapter_spec is None:
        raise InvalidRequestError("ip_image", "no IP-Adapter is configured",
                                  allowed="set --ip-adapter NAME or IMAGELOOP_ENGINE__IP_ADAPTER")
    if request.ip_image is not None and ip_adapter_spec is not None and not ip_adapter_loaded:
        resolve_ip_adapter_path(ip_adapter_spec, settings)  # a missing file fails before any load
    return recipe


def make_plan(request: GenerationRequest, recipe: Recipe | None, model: LoadedModel, settings: Settings) -> RunPlan:
    """``request`` resolved on ``model``: every default filled in (request, then recipe, then the model's), a random
    seed drawn if none was given, the family's rules checked (InvalidRequestError naming the field)."""
    defaults = model.defaults
    width, height = request.width, request.height
    if request.init_image is not None and (width is None or height is None):
        # img2img keeps the source's size unless told otherwise (rounded down to a multiple of 8).
        source = decode_image(request.init_image, "init_image")
        width = width or max(64, min(4096, source.width // 8 * 8))
        height = height or max(64, min(4096, source.height // 8 * 8))
    random_seed = request.seed is None
    style = request.style or (recipe.style if recipe else None)
    resolved = request.model_copy(update={
        "steps": request.steps or (recipe.steps if recipe else None) or defaults.steps,
        "guidance_scale": _first(request.guidance_scale, recipe.guidance_scale if recipe else None,
                                 defaults.guidance_scale),
        "scheduler": canonical_scheduler_name(
            request.scheduler or (recipe.scheduler if recipe else None) or defaults.scheduler),
        "seed": random.randint(0, MAX_SEED - request.num_images + 1) if random_seed else request.seed,
        "width": width or defaults.width,
        "height": height or defaults.height,
        "style": style,
        "strength": _first(request.strength, DEFAULT_STRENGTH) if request.init_image is not None else None,
        "controlnet_conditioning_scale": _first(request.controlnet_conditioning_scale, DEFAULT_CONTROL_SCALE)
        if request.control_image is not None else None,
        "ip_scale": _first(request.ip_scale, DEFAULT_IP_SCALE) if request.ip_image is not None else None,
        "hires_strength": _first(request.hires_strength, DEFAULT_HIRES_STRENGTH)
        if request.hires_scale is not None else None,
    })
    # Re-validate: recipe and model values pass through the same field rules and settings limits.
    resolved = GenerationRequest.model_validate(resolved.model_dump())
    check_limits(resolved, settings)
    prompt, negative = apply_style(resolved.prompt, resolved.negative_prompt, style)
    architecture = model.architecture.value
    if is_flow_family(architecture):
        assert resolved.width is not None and resolved.height is not None
        check_flow_request(architecture, model.pipe, negative_prompt=request.negative_prompt,
                           guidance_scale=request.guidance_scale, clip_skip=request.clip_skip,
                           control=request.control_image is not None, width=resolved.width,
                           height=resolved.height)
        check_flow_scheduler(resolved.scheduler or "", architecture)
    unused = unused_negatives(resolved.negative_prompt, negative, model.negative_unused)
    if not model.runs_negative_pass:
        negative = ""  # nothing to encode
    recipe = with_request_loras(recipe, request.loras)
    recipe, model_version = with_base_lora(recipe, request.base_lora, model.version)
    assert resolved.seed is not None and resolved.steps is not None and resolved.guidance_scale is not None
    assert resolved.width is not None and resolved.height is not None and resolved.scheduler is not None
    return RunPlan(resolved, recipe, random_seed, prompt, negative, resolved.seed, resolved.steps,
                 resolved.guidance_scale, resolved.width, resolved.height, resolved.scheduler, Mode(request.mode),
                 model_version, unused)


def unused_negatives(own: str, joined: str, reason: str | None) -> dict[str, str]:
    """The negative prompts a model without a negative pass leaves unused (``reason`` None: it has one), by the
    names the PNG parameters give them: the request's ``own``, and the style preset's part of ``joined`` (``own``
    with the preset's terms added). The request's is not "Negative prompt", which A1111 reads as the text itself."""
    if reason is None:
        return {}
    unused: dict[str, str] = {}
    if own.strip():
        unused["Request negative prompt"] = reason
    if joined.strip() != own.strip():
        unused["Style negative prompt"] = reason
    return unused


def with_base_lora(recipe: Recipe | None, lora: BaseLora | None, model_version: str) -> tuple[Recipe | None, str]:
    """The recipe with the service's base LoRA added under its own LoRAs, and the model version to record; a LoRA
    trained on another model is left out."""
    if lora is None or lora.model_version != model_version:
        return recipe, model_version
    base = LoraWeight(file=lora.file, weight=lora.weight)
    # model_copy skips validation: a recipe already at its LoRA limit still gets the service's LoRA.
    merged = recipe.model_copy(update={"loras": [*recipe.loras, base]}) if recipe is not None else \
        Recipe(name="base-lora", loras=[base])
    return merged, f"{model_version}+{lora.tag}"


def hires_steps_run(plan: RunPlan) -> int:
    """The denoising steps hires fix adds: img2img runs ``steps * strength`` of its steps (diffusers and A1111)."""
    request = plan.request
    if request.hires_scale is None or request.hires_strength is None:
        return 0
    steps = request.hires_steps or plan.steps
    return min(int(steps * request.hires_strength), steps)


def with_request_loras(recipe: Recipe | None, loras: Sequence[LoraWeight]) -> Recipe | None:
    """The recipe with the request's own LoRAs (pasted <lora:name:weight> tags) added after its LoRAs; a LoRA both
    name gets the request's weight."""
    if not loras:
        return recipe
    own = {lora.file for lora in loras}
    kept = [lora for lora in recipe.loras if lora.file not in own] if recipe is not None else []
    # model_copy skips validation: the recipe's LoRA limit applies to what a recipe file holds.
    if recipe is not None:
        return recipe.model_copy(update={"loras": [*kept, *loras]})
    return Recipe(name="request-loras", loras=list(loras))


def _first(*values: float | None) -> float | None:
    """The first value that is not None (None if all are)."""
    return next((value for value in values if value is not None), None)


def batch_chunks(indices: list[int], plans: list[RunPlan], max_images: int) -> list[list[int]]:
    """Split a group so that no pipeline call makes more than ``max_images`` images."""
    chunks: list[list[int]] = [[]]
    count = 0
    for index in indices:
        n = plans[index].request.num_images
        if chunks[-1] and count + n > max_images:
            chunks.append([])
            count = 0
        chunks[-1].append(index)
        count += n
    return chunks
