"""What the Create page offers: style presets, recipes, and the expanded prompt before anything is generated."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from imageloop.engine.model_profile import model_profile
from imageloop.engine.recipes import RecipeStore
from imageloop.prompts.expand import expansion_record, join_negatives, resolve_prompt, resolved_from_record
from imageloop.prompts.style_fit import style_fit
from imageloop.prompts.styles import load_styles
from imageloop.server.deps import CurrentUser, ServicesDep
from imageloop.server.ui_schemas import (
    ActiveModelOut,
    ExpandRequest,
    ExpansionOut,
    RecallOut,
    RecipeOut,
    StyleOut,
    active_model_out,
)

router = APIRouter(prefix="/api/v1", tags=["create"])


@router.get("/styles", summary="Style presets")
def styles(user: CurrentUser, services: ServicesDep) -> list[StyleOut]:
    """Every preset, in the file's order; ``style`` in a generation takes the slug (or either display name). For a
    served model with a fixed vocabulary (the embedded one), ``note`` says what each preset does to it and
    ``means_nothing`` marks the presets whose words it knows none of (still selectable)."""
    knows = services.served_model.knows
    out = []
    for preset in load_styles().values():
        fit = None if knows is None else style_fit(preset, knows)
        out.append(StyleOut(name=preset.name, name_en=preset.name_en, name_zh=preset.name_zh,
                            means_nothing=fit is not None and fit.means_nothing,
                            note=None if fit is None else fit.note))
    return out


@router.get("/recipes", summary="Recipes")
def recipes(user: CurrentUser, services: ServicesDep) -> list[RecipeOut]:
    """The usable recipes in the data dir, by name (broken files are left out; ``imageloop recipes`` lists them)."""
    return [
        RecipeOut(name=r.name, description=r.description, style=r.style, steps=r.steps,
                  guidance_scale=r.guidance_scale)
        for r in RecipeStore(services.settings).list()
    ]


@router.get("/model", summary="The served model: family, what it needs, the settings that apply")
async def active_model(user: CurrentUser, services: ServicesDep) -> ActiveModelOut:
    """The model generations run on, read from its files (no weights loaded): its family and label, what it needs,
    the samplers that apply and, for each optional setting (negative prompt, sampler, clip skip, ControlNet,
    IP-Adapter), whether it applies and why not (or what it costs: a guidance-embedded model's negative prompt runs a
    second UNet pass). Requests with a setting that does not apply are refused by name."""
    settings = services.settings
    return active_model_out(await run_in_threadpool(lambda: model_profile(settings.engine.model, settings)))


@router.post("/prompts/expand", summary="Expand an intent into a prompt without generating")
async def expand(body: ExpandRequest, user: CurrentUser, services: ServicesDep) -> ExpansionOut:
    """The prompt a generation with this intent runs, by the same prompt service (moderated: a blocked intent is
    a 400), so the user can read and edit it first. It is stored for ``prompts.preview_ttl_seconds``: POST
    /api/v1/generations with its ``expansion_id`` generates exactly this prompt, without expanding or moderating it
    again; an edited prompt is sent as ``prompt``. ``details`` says where each word came from."""
    # The request's negative prompt is joined at submit (it may change in between): the preview keeps the
    # expander's own negative terms.
    resolved = await run_in_threadpool(
        lambda: resolve_prompt(intent=body.intent, prompt=None, language=body.intent_language, user_id=user.id,
                               service=services.prompts)
    )
    ttl = timedelta(seconds=services.settings.prompts.preview_ttl_seconds)
    preview = await run_in_threadpool(
        lambda: services.storage.previews.store(user.id, body.intent, body.intent_language,
                                                expansion_record(resolved), ttl=ttl)
    )
    shown = resolved_from_record(preview.expansion)  # what generating from it runs (details JSON-safe)
    recall = None
    if shown.recall is not None:
        recall = RecallOut(params=dict(shown.recall.params), recipe=shown.recall.recipe, style=shown.recall.style)
    return ExpansionOut(expansion_id=preview.id, expires_at=preview.expires_at, final_prompt=shown.final_prompt,
                        negative_prompt=join_negatives(body.negative_prompt, shown.negative_prompt),
                        strategy=shown.strategy, version=shown.version, language=shown.language,
                        details=shown.details, recall=recall)
