"""What the Create page offers: style presets, recipes, and the expanded prompt before anything is generated."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from imageloop.engine.recipes import RecipeStore
from imageloop.prompts.expand import resolve_prompt
from imageloop.prompts.styles import load_styles
from imageloop.server.deps import CurrentUser, ServicesDep
from imageloop.server.ui_schemas import ExpandRequest, ExpansionOut, RecallOut, RecipeOut, StyleOut

router = APIRouter(prefix="/api/v1", tags=["create"])


@router.get("/styles", summary="Style presets")
def styles(user: CurrentUser) -> list[StyleOut]:
    """Every preset, in the file's order; ``style`` in a generation takes the slug (or either display name)."""
    return [StyleOut(name=p.name, name_en=p.name_en, name_zh=p.name_zh) for p in load_styles().values()]


@router.get("/recipes", summary="Recipes")
def recipes(user: CurrentUser, services: ServicesDep) -> list[RecipeOut]:
    """The usable recipes in the data dir, by name (broken files are left out; ``imageloop recipes`` lists them)."""
    return [
        RecipeOut(name=r.name, description=r.description, style=r.style, steps=r.steps,
                  guidance_scale=r.guidance_scale)
        for r in RecipeStore(services.settings).list()
    ]


@router.post("/prompts/expand", summary="Expand an intent into a prompt without generating")
async def expand(body: ExpandRequest, user: CurrentUser, services: ServicesDep) -> ExpansionOut:
    """The prompt a generation with this intent would run with, by the same prompt service the workers use
    (moderated: a blocked intent is a 400), so the user can read and edit it first. Nothing is stored."""
    # Called exactly as the job runner calls it (imageloop.jobs.runner), so the preview is what would run.
    resolved = await run_in_threadpool(
        lambda: resolve_prompt(intent=body.intent, prompt=None, negative_prompt=body.negative_prompt,
                               language=body.intent_language, user_id=user.id, service=services.prompts)
    )
    recall = None
    if resolved.recall is not None:
        recall = RecallOut(params=dict(resolved.recall.params), recipe=resolved.recall.recipe,
                           style=resolved.recall.style)
    return ExpansionOut(final_prompt=resolved.final_prompt, negative_prompt=resolved.negative_prompt,
                        strategy=resolved.strategy, version=resolved.version, language=resolved.language,
                        recall=recall)
