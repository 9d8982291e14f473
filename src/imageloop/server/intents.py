"""Submit-time prompt work: moderate what the user wrote, resolve the prompt once, fill "the usual" in, choose a
recipe when several fit.

Runs before a generation is stored, with the process's :class:`~imageloop.prompts.service.PromptService`, so a
blocked text (ModerationError, 400) or "the usual" without history (InvalidRequestError naming ``intent``, 422)
stores nothing. The resolved prompt (an explicit prompt passed through, the intent expanded, or a preview the user
was shown, named by ``expansion_id``) is stored with the generation and the worker runs it as it is; negative
prompts are never moderated.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from imageloop.config import Settings
from imageloop.engine.recipes import RecipeStore
from imageloop.errors import InvalidRequestError
from imageloop.prompts.expand import (
    ResolvedPrompt,
    expansion_record,
    join_negatives,
    resolve_prompt,
    resolved_from_record,
)
from imageloop.prompts.expander import Recall
from imageloop.prompts.recipes import RecipeChoice, fitting_recipes
from imageloop.prompts.service import PromptService
from imageloop.prompts.usual import usual_request
from imageloop.server.schemas import GenerationCreate
from imageloop.storage import Expansion, UserId
from imageloop.storage.previews import PreviewRepository

__all__ = ["PreparedRequest", "fill_recall", "prepare_request"]

# The request params "the usual" may fill in (the rest of a request is the user's to give).
RECALLED_PARAMS = ("guidance_scale", "steps", "scheduler")


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """The request as it will be stored, the prompt it runs (``expansion``, stored with it), and the recipe
    choice to log once the generation exists (or None)."""

    body: GenerationCreate
    expansion: Expansion
    recipe_choice: RecipeChoice | None = None
    ignored: list[str] = field(default_factory=list)  # pasted parameters not honoured (see with_parameters_text)


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


def _previewed(
    body: GenerationCreate, previews: PreviewRepository, user_id: str
) -> tuple[GenerationCreate, ResolvedPrompt]:
    """The preview ``body.expansion_id`` names, as ``body`` will run it: InvalidRequestError naming
    ``expansion_id`` when it is not the user's, has expired, or contradicts the body (an explicit prompt, or
    another intent)."""
    assert body.expansion_id is not None
    if body.prompt is not None and body.prompt.strip():
        raise InvalidRequestError("expansion_id", "give either an expanded prompt's id or an explicit prompt, not "
                                  "both (an edited preview is sent as the prompt)")
    preview = previews.get(UserId(user_id), body.expansion_id)
    if body.intent is not None and body.intent.strip() and body.intent != preview.intent:
        raise InvalidRequestError("expansion_id", "was expanded from another intent: expand this one again",
                                  value=body.expansion_id)
    resolved = resolved_from_record(preview.expansion)
    # The preview keeps the expander's own negative terms; this request's negative prompt goes first, as ever.
    resolved = replace(resolved, negative_prompt=join_negatives(body.negative_prompt, resolved.negative_prompt))
    body = body.model_copy(update={"intent": preview.intent,
                                   "intent_language": body.intent_language or preview.intent_language})
    return body, resolved


def prepare_request(
    body: GenerationCreate,
    prompts: PromptService,
    settings: Settings,
    user_id: str,
    previews: PreviewRepository,
    *,
    choose_recipe: bool = True,
) -> PreparedRequest:
    """Moderate ``body``, resolve its prompt once and complete it before it is stored.

    An explicit prompt (and any intent beside it) is checked with :meth:`PromptService.check_prompt` and passed
    through; an ``expansion_id`` takes the stored preview (from ``previews``) as it was shown, moderated when it was
    made; an intent alone is expanded for ``user_id`` (moderating it and its expansion). When the prompt came from
    "the usual", the recalled settings fill what the request left open. When the request still names no recipe and
    several fit its style, one is chosen unless ``choose_recipe`` is off (log it with
    :meth:`PromptService.record_recipe_choice` after storing).
    Raises ModerationError or InvalidRequestError as the service does.
    """
    if body.expansion_id is not None:
        body, resolved = _previewed(body, previews, user_id)
    else:
        if body.prompt is not None and body.prompt.strip():
            prompts.check_prompt(body.intent, field="intent")
        elif body.intent is not None and usual_request(body.intent) is not None:
            prompts.sync_memory(force=True)  # an image kept a moment ago counts for "the usual"
        resolved = resolve_prompt(intent=body.intent, prompt=body.prompt, negative_prompt=body.negative_prompt,
                                  language=body.intent_language, user_id=user_id, service=prompts)
    if resolved.recall is not None:
        body = fill_recall(body, resolved.recall)
    choice = _choose_recipe(prompts, settings, body.style, user_id) if body.recipe is None and choose_recipe \
        else None
    if choice is not None:
        body = body.model_copy(update={"recipe": choice.recipe})
    return PreparedRequest(body, expansion_record(resolved), choice)
