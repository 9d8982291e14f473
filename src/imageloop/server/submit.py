"""Turning API requests into queued generations: validated before storing, so no job fails for bad input."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from imageloop.config import EMBEDDED_MODELS, Settings
from imageloop.engine.infotext import import_parameters
from imageloop.engine.model_files import model_family
from imageloop.errors import InvalidRequestError
from imageloop.jobs.requests import (
    batch_key,
    check_library_loras,
    check_names,
    derived_seed,
    engine_request,
    with_seed,
)
from imageloop.prompts.expand import PASSTHROUGH_STRATEGY, PASSTHROUGH_VERSION
from imageloop.server.schemas import GenerationCreate
from imageloop.storage import Expansion, GenerationRecord, NewGeneration, SessionId, Storage

# Engine field names as the API calls them.
_API_FIELDS = {"num_images": "n", "prompt": "prompt"}
_PARAM_NAMES = ("steps", "guidance_scale", "seed", "width", "height", "scheduler", "clip_skip", "hires_scale",
                "hires_steps", "hires_strength", "loras", "ip_image", "ip_scale")


def _api_field(field: str) -> str:
    if field in _PARAM_NAMES or field.startswith("params."):
        return field if field.startswith("params.") else f"params.{field}"
    if field in _PARAM_NAMES:
        return f"params.{field}"
    return _API_FIELDS.get(field, field)


def renamed(exc: InvalidRequestError, field: str) -> InvalidRequestError:
    """``exc`` naming ``field`` instead (the API's name for an engine field); ``exc`` itself if they agree."""
    if field == exc.field:
        return exc
    text = exc.message.removeprefix(f"{exc.field}: ")
    if exc.allowed:
        text = text.removesuffix(f" (allowed: {exc.allowed})")
    return InvalidRequestError(field, text, value=exc.value, allowed=exc.allowed)


def with_parameters_text(body: GenerationCreate, settings: Settings) -> tuple[GenerationCreate, list[str]]:
    """``body`` with the settings its ``parameters_text`` (pasted from A1111, Forge or Civitai) gives filled in where
    ``body`` leaves them open, and the text removed; with the settings not honoured, one line each. InvalidRequestError
    names ``parameters_text`` (a <lora:...> tag naming a LoRA missing from the library, a malformed value)."""
    if body.parameters_text is None:
        return body, []
    try:
        imported = import_parameters(body.parameters_text, settings, model_name=_served_model_name(settings),
                                     family=model_family(settings.engine.model, settings))
    except InvalidRequestError as exc:
        raise renamed(exc, "parameters_text") from exc
    pasted = imported.request.model_dump(mode="json", exclude_unset=True)
    given = body.params.model_dump(exclude_none=True)
    params = {name: pasted[name] for name in _PARAM_NAMES if name in pasted and name != "loras"}
    if imported.request.loras:
        params["loras"] = pasted["loras"]
    params.update(given)
    changes = {
        "parameters_text": None,
        "params": body.params.model_validate(params),
        "prompt": body.prompt if body.prompt and body.prompt.strip() else imported.request.prompt,
        "negative_prompt": body.negative_prompt if body.negative_prompt is not None
        else imported.request.negative_prompt or None,
        "recipe": body.recipe or imported.request.recipe,
        "style": body.style or imported.request.style,
    }
    return body.model_copy(update=changes), [str(item) for item in imported.ignored]


def _served_model_name(settings: Settings) -> str:
    # The name the engine gives the configured model (its file's stem or folder's name), without loading it.
    spec = str(settings.engine.model)
    if spec in EMBEDDED_MODELS:
        return spec
    path = Path(spec)
    return path.stem if path.suffix else path.name


def new_generation(
    body: GenerationCreate, settings: Settings, user_id: str | None = None, *, expansion: Expansion | None = None
) -> NewGeneration:
    """A queued generation for ``body``: params checked by the engine's own rules, recipe (``user_id``'s private
    recipes, then the shared ones) and style known, a seed drawn when none is given; stored with ``expansion``
    (the prompt resolved at submit) when given. InvalidRequestError names the API field."""
    if not (body.intent and body.intent.strip()) and not (body.prompt and body.prompt.strip()):
        raise InvalidRequestError("intent", "give an intent or a prompt (both are empty)")
    params: dict[str, Any] = body.params.model_dump(exclude_none=True)
    if params.get("seed") == -1:
        del params["seed"]
    params["num_images"] = body.n
    return new_generation_from(
        intent=body.intent, intent_language=body.intent_language, prompt=body.prompt,
        negative_prompt=body.negative_prompt, params=params, recipe=body.recipe, style=body.style,
        session_id=body.session_id, settings=settings, user_id=user_id, expansion=expansion,
    )


def new_generation_from(
    *,
    intent: str | None,
    intent_language: str | None,
    prompt: str | None,
    negative_prompt: str | None,
    params: Mapping[str, Any],
    recipe: str | None,
    style: str | None,
    session_id: str | None,
    settings: Settings,
    parent: GenerationRecord | None = None,
    user_id: str | None = None,
    expansion: Expansion | None = None,
) -> NewGeneration:
    """Validate the parts of a generation and build it (seeded, with its batch key, with ``expansion`` when the
    prompt was resolved at submit); ``recipe`` may name one of ``user_id``'s private recipes."""
    seeded = with_seed(params)
    if expansion is not None:  # check what will run
        prompt_to_run, negative_to_run = expansion.final_prompt, expansion.negative_prompt or negative_prompt
    else:
        prompt_to_run, negative_to_run = prompt or intent or "", negative_prompt
    try:
        request = engine_request(
            prompt=prompt_to_run, negative_prompt=negative_to_run, params=seeded, recipe=recipe, style=style,
            settings=settings,
        )
        check_library_loras(request, settings)
        check_names(recipe, style, settings, user_id)
    except InvalidRequestError as exc:
        raise renamed(exc, _api_field(exc.field)) from exc
    return NewGeneration(
        intent=intent, intent_language=intent_language, prompt=prompt, negative_prompt=negative_prompt,
        params=seeded, recipe=recipe, style=style, session_id=SessionId(session_id) if session_id else None,
        parent_id=parent.id if parent is not None else None, batch_key=batch_key(seeded, recipe, settings),
        expansion=expansion,
    )


def child_seed(parent: GenerationRecord, settings: Settings, storage: Storage) -> int | None:
    """The seed of a reroll or edit of ``parent``: None (a fresh random one) unless ``jobs.reroll_seeds`` is
    "derived", then a function of the parent's seed and the child's depth in its chain."""
    seed = parent.params.get("seed")
    if settings.jobs.reroll_seeds == "random" or not isinstance(seed, int):
        return None
    return derived_seed(seed, storage.generations.chain_depth(parent.id) + 1)


def _child_expansion(parent: GenerationRecord, prompt: str | None) -> Expansion | None:
    """What a child of ``parent`` runs: the edited ``prompt`` as written, or else the parent's final prompt as it
    was expanded (None while the parent has none yet: the worker expands the intent then)."""
    if prompt is not None:
        return Expansion(final_prompt=prompt, negative_prompt=parent.negative_prompt,
                         expander_strategy=PASSTHROUGH_STRATEGY, expander_version=PASSTHROUGH_VERSION,
                         intent_language=parent.intent_language)
    if parent.final_prompt is None:
        return None
    return Expansion(final_prompt=parent.final_prompt, negative_prompt=parent.negative_prompt,
                     expander_strategy=parent.expander_strategy, expander_version=parent.expander_version,
                     intent_language=parent.intent_language, details=dict(parent.expansion_details),
                     recall=parent.expansion_recall)


def child_generation(
    parent: GenerationRecord, settings: Settings, *, prompt: str | None = None, seed: int | None = None
) -> NewGeneration:
    """The request a ``regenerate`` (the parent's final prompt, negative prompt and params, a new seed: nothing is
    expanded again) or ``edit`` (the edited ``prompt``, as written) starts; ``seed`` None draws a random one (see
    :func:`child_seed`)."""
    params = {key: value for key, value in parent.params.items() if key != "seed"}
    if seed is not None:
        params["seed"] = seed
    return new_generation_from(
        intent=parent.intent, intent_language=parent.intent_language,
        prompt=prompt if prompt is not None else parent.prompt, negative_prompt=parent.negative_prompt,
        params=params, recipe=parent.recipe, style=parent.style, session_id=parent.session_id, settings=settings,
        parent=parent, user_id=parent.user_id, expansion=_child_expansion(parent, prompt),
    )
