"""Submit-time prompt work: moderate what the user wrote, fill "the usual" in, choose a recipe when several fit.

Runs before a generation is stored, with the process's :class:`~imageloop.prompts.service.PromptService`, so a
blocked text (ModerationError, 400) or "the usual" without history (InvalidRequestError naming ``intent``, 422)
stores nothing. The worker expands the intent again when the job runs (:func:`imageloop.prompts.expand.resolve_prompt`
with the same service); negative prompts are never moderated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from imageloop.config import Settings
from imageloop.engine.recipes import RecipeStore
from imageloop.prompts.expander import Recall
from imageloop.prompts.language import resolve_language
from imageloop.prompts.recipes import RecipeChoice, fitting_recipes
from imageloop.prompts.service import PromptService
from imageloop.prompts.usual import usual_request
from imageloop.server.schemas import GenerationCreate

__all__ = ["PreparedRequest", "fill_recall", "prepare_request"]

# The request params "the usual" may fill in (the rest of a request is the user's to give).
RECALLED_PARAMS = ("guidance_scale", "steps", "scheduler")


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """The request as it will be stored, and the recipe choice to log once the generation exists (or None)."""

    body: GenerationCreate
    recipe_choice: RecipeChoice | None = None


def fill_recall(body: GenerationCreate, recall: Recall) -> GenerationCreate:
    """``body`` with what it left open (CFG, steps, scheduler, size, recipe, style) taken from ``recall``.

    The size is filled only when neither width nor height was given, so a given side never gets a recalled
    partner of another aspect."""
    params = body.params
    update: dict[str, Any] = {
        name: recall.params[name]
        for name in RECALLED_PARAMS
        if getattr(params, name) is None and recall.params.get(name) is not None
    }
    if params.width is None and params.height is None and recall.params.get("width") and recall.params.get("height"):
        update["width"], update["height"] = recall.params["width"], recall.params["height"]
    changes: dict[str, Any] = {"params": params.model_copy(update=update)} if update else {}
    if body.recipe is None and recall.recipe:
        changes["recipe"] = recall.recipe
    if body.style is None and recall.style:
        changes["style"] = recall.style
    return body.model_copy(update=changes) if changes else body


def _choose_recipe(
    prompts: PromptService, settings: Settings, style: str | None, user_id: str
) -> RecipeChoice | None:
    """Thompson-sample a recipe when several shared recipes fit ``style``; None when fewer than two fit."""
    names = fitting_recipes({recipe.name: recipe for recipe in RecipeStore(settings).list()}, style=style)
    if len(names) < 2:
        return None
    return prompts.choose_recipe(names, user=user_id)


def prepare_request(
    body: GenerationCreate, prompts: PromptService, settings: Settings, user_id: str
) -> PreparedRequest:
    """Moderate ``body`` and complete it before it is stored.

    An explicit prompt (and any intent beside it) is checked with :meth:`PromptService.check_prompt`; an intent
    alone is expanded for ``user_id`` (moderating it and its expansion) and, when it asked for "the usual", the
    recalled settings fill what the request left open. When the request still names no recipe and several fit its
    style, one is chosen (log it with :meth:`PromptService.record_recipe_choice` after storing). Raises
    ModerationError or InvalidRequestError as the service does.
    """
    if body.prompt is not None and body.prompt.strip():
        prompts.check_prompt(body.prompt)
        prompts.check_prompt(body.intent, field="intent")
    elif body.intent is not None and body.intent.strip():
        language = resolve_language(body.intent, body.intent_language)
        if usual_request(body.intent) is not None:  # an image kept a moment ago counts for "the usual"
            prompts.sync_memory(force=True)
        expansion = prompts.expand(body.intent, user=user_id, language=language)
        if expansion.recall is not None:
            body = fill_recall(body, expansion.recall)
    choice = _choose_recipe(prompts, settings, body.style, user_id) if body.recipe is None else None
    if choice is not None:
        body = body.model_copy(update={"recipe": choice.recipe})
    return PreparedRequest(body, choice)
