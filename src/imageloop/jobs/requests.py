"""From a stored generation to an engine request, and which stored generations can share one pipeline call.

The server uses the same functions to validate a request before it is queued, so a job never fails in the worker
for a reason the API could have reported.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping
from typing import Any

from imageloop.config import Settings
from imageloop.engine.recipes import Recipe, RecipeStore, resolve_lora_path
from imageloop.engine.request import MAX_SEED, GenerationRequest, check_limits
from imageloop.errors import InvalidRequestError, RecipeError, UnknownNameError
from imageloop.storage import GenerationRecord
from imageloop.training.serving import GeneratorRouting
from imageloop.training.user_lora import user_recipe, user_recipes

# The engine request fields a stored generation's ``params`` may hold.
PARAM_FIELDS = ("steps", "guidance_scale", "seed", "width", "height", "scheduler", "num_images", "clip_skip",
                "hires_scale", "hires_steps", "hires_strength", "loras", "ip_image", "ip_scale")
# What must be equal for two requests to run in one pipeline call (the prompts may differ).
_BATCH_FIELDS = ("steps", "guidance_scale", "width", "height", "scheduler", "clip_skip", "hires_scale", "hires_steps",
                 "hires_strength", "loras", "ip_image", "ip_scale")


def engine_request(
    *,
    prompt: str,
    negative_prompt: str | None,
    params: Mapping[str, Any],
    recipe: str | None,
    style: str | None,
    settings: Settings,
) -> GenerationRequest:
    """The engine request for ``prompt`` with stored ``params``; InvalidRequestError naming the bad field.

    Also checks the limits from settings (steps, pixels, images per request).
    """
    unknown = sorted(set(params) - set(PARAM_FIELDS))
    if unknown:
        allowed = ", ".join(PARAM_FIELDS)
        raise InvalidRequestError(f"params.{unknown[0]}", "is not a generation parameter", allowed=allowed)
    request = GenerationRequest(
        prompt=prompt, negative_prompt=negative_prompt or "", recipe=recipe, style=style, **dict(params)
    )
    check_limits(request, settings)
    if request.ip_image is not None and settings.engine.ip_adapter is None:
        raise InvalidRequestError("ip_image", "no IP-Adapter is configured on this server",
                                  allowed="set IMAGELOOP_ENGINE__IP_ADAPTER")
    return request


def check_library_loras(request: GenerationRequest, settings: Settings) -> None:
    """Each of the request's own LoRAs must be a file of the LoRA library (no absolute path, nothing outside it);
    InvalidRequestError naming ``params.loras.<i>.file`` otherwise."""
    for index, lora in enumerate(request.loras):
        field = f"params.loras.{index}.file"
        parts = lora.file.replace("\\", "/").split("/")
        if lora.file.startswith(("/", "\\")) or ".." in parts or ":" in lora.file:
            raise InvalidRequestError(field, "must name a LoRA inside the LoRA library", value=lora.file)
        try:
            resolve_lora_path(lora.file, settings.loras_dir)
        except RecipeError:
            raise InvalidRequestError(field, f"LoRA {lora.file!r} is not in the LoRA library", value=lora.file) \
                from None


def find_recipe(name: str, settings: Settings, user_id: str | None = None) -> Recipe:
    """The recipe ``name`` as ``user_id`` sees it: their private recipe of that name first, then the shared one.

    Raises UnknownNameError listing the names this user may use (never another user's private recipes), or
    RecipeError for a broken recipe file.
    """
    private = user_recipe(settings, user_id, name) if user_id is not None else None
    if private is not None:
        return private
    store = RecipeStore(settings)
    try:
        return store.get(name)
    except UnknownNameError as exc:
        own = [r.name for r in user_recipes(settings, user_id)] if user_id is not None else []
        raise UnknownNameError("recipe", name, sorted({*store.names(), *own})) from exc


def check_names(recipe: str | None, style: str | None, settings: Settings, user_id: str | None = None) -> None:
    """Raise UnknownNameError (or RecipeError for a broken recipe file) when ``recipe`` (as ``user_id`` sees it:
    their private recipes, then the shared ones) or ``style`` is not usable."""
    from imageloop.prompts.styles import get_style

    if recipe is not None:
        find_recipe(recipe, settings, user_id)
    if style is not None:
        get_style(style)


def record_request(
    record: GenerationRecord, settings: Settings, generator: GeneratorRouting | None = None
) -> GenerationRequest:
    """The engine request a claimed generation runs: its final prompt (set by the expansion) and its params, with
    its recipe resolved as its user sees it (their private recipe of that name first) and, given ``generator``, the
    Diffusion-DPO LoRA that serves this user (the engine applies it under the recipe, on its own base model only)."""
    prompt = record.final_prompt if record.final_prompt is not None else record.prompt or record.intent or ""
    request = engine_request(
        prompt=prompt, negative_prompt=record.negative_prompt, params=record.params, recipe=record.recipe,
        style=record.style, settings=settings,
    )
    if record.recipe is not None:
        request = request.with_recipe(find_recipe(record.recipe, settings, record.user_id))
    if generator is not None:
        request = request.with_base_lora(generator.lora_for(record.user_id))
    return request


def with_seed(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with a random seed filled in when none is given, so a re-run job draws the same images."""
    out = dict(params)
    if out.get("seed") is None:
        out["seed"] = secrets.randbelow(MAX_SEED + 1)
    return out


def derived_seed(parent_seed: int, depth: int) -> int:
    """The seed of a child generation (reroll or edit) under ``jobs.reroll_seeds = "derived"``: a hash of the
    parent's seed and the child's depth in its chain (1 = the first reroll), in the range random seeds take."""
    digest = hashlib.sha256(f"imageloop-reroll:{parent_seed}:{depth}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (MAX_SEED + 1)


def batch_key(params: Mapping[str, Any], recipe: str | None, settings: Settings) -> str:
    """A key equal for generations the engine can run in one pipeline call: same model, size, steps, CFG,
    scheduler and recipe (prompts, seeds, styles and image counts may differ)."""
    shared = {name: params.get(name) for name in _BATCH_FIELDS}
    shared["model"] = settings.engine.model
    shared["recipe"] = recipe
    text = json.dumps(shared, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
