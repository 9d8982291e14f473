"""JSON shapes of the routes the web page needs beyond the core API: sign-in, keys, catalog, prompt preview,
gallery, share links and the flywheel dashboard."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from pydantic import BaseModel, Field

from imageloop.engine.model_knowledge import KnownValue, ModelKnowledge
from imageloop.engine.model_profile import ModelProfile
from imageloop.server.schemas import (
    DETAILS_DESCRIPTION,
    MAX_ID,
    MAX_TEXT,
    ActionOut,
    CreditsOut,
    GenerationOut,
    ModelVersionOut,
    StrictBody,
    TrainingRunOut,
)
from imageloop.storage import ActionType, ApiKeyInfo, JobStatus, UserAccount

# --- account ------------------------------------------------------------------------------------------------


class PasswordSignIn(StrictBody):
    """A user name and the password set with ``imageloop users set-password``."""

    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class ApiKeyOut(BaseModel):
    id: str
    prefix: str = Field(description="The key's first characters, to recognise it; the key itself is never shown.")
    created_at: datetime
    revoked_at: datetime | None
    expires_at: datetime | None = Field(default=None, description="When a key issued at sign-in stops working.")
    active: bool


class NewApiKeyOut(BaseModel):
    api_key: str = Field(description="The new key: shown once, stored only hashed.")
    key: ApiKeyOut


class AccountOut(BaseModel):
    id: str
    name: str
    is_admin: bool
    training_opt_out: bool
    has_password: bool


class AccountCreditsOut(AccountOut):
    """The account with its credits (``GET /api/v1/account``)."""

    credits: CreditsOut = Field(description="Balance, tier, limits and the newest ledger rows.")


class SignedInOut(NewApiKeyOut):
    account: AccountOut


def api_key_out(info: ApiKeyInfo) -> ApiKeyOut:
    return ApiKeyOut(id=info.id, prefix=info.prefix, created_at=info.created_at, revoked_at=info.revoked_at,
                     expires_at=info.expires_at, active=info.revoked_at is None and not _expired(info))


def _expired(info: ApiKeyInfo) -> bool:
    return info.expires_at is not None and info.expires_at <= datetime.now(UTC)


def account_out(user: UserAccount) -> AccountOut:
    return AccountOut(id=user.id, name=user.name, is_admin=user.is_admin, training_opt_out=user.training_opt_out,
                      has_password=user.has_password)


# --- create -------------------------------------------------------------------------------------------------


class StyleOut(BaseModel):
    name: str
    name_en: str
    name_zh: str
    means_nothing: bool = Field(default=False, description="The served model knows none of the preset's words "
                                "(a closed-vocabulary model such as the embedded one): applying it changes nothing. "
                                "It stays selectable.")
    note: str | None = Field(default=None, description="What the preset does to the served model, when that model "
                             "has a fixed vocabulary; None for an open-vocabulary model.")


class RecipeOut(BaseModel):
    name: str
    description: str
    style: str | None
    steps: int | None
    guidance_scale: float | None


class ControlRuleOut(BaseModel):
    name: str = Field(description="negative_prompt, scheduler, clip_skip, controlnet or ip_adapter.")
    applies: bool
    why: str | None = Field(description="Why it does not apply to the served model, or which part of it does not "
                            "(the samplers of FLUX.1/SD3); None when all of it applies.")


class KnownValueOut(BaseModel):
    key: str
    en: list[str] = Field(description="English phrasings it was trained on, canonical first.")
    zh: list[str] = Field(description="Chinese phrasings, canonical first.")


class ModelKnowsOut(BaseModel):
    """What a closed-vocabulary model was trained on (its ``knows.json``)."""

    subjects: list[KnownValueOut]
    attributes: dict[str, list[KnownValueOut]] = Field(description="Attribute name -> its values, in order.")
    languages: list[str]
    unnamed: str = Field(description="What happens to an attribute the prompt does not name.")


def _known(values: tuple[KnownValue, ...]) -> list[KnownValueOut]:
    return [KnownValueOut(key=v.key, en=list(v.en), zh=list(v.zh)) for v in values]


def knows_out(knows: ModelKnowledge) -> ModelKnowsOut:
    """The API's form of a ``knows.json``."""
    return ModelKnowsOut(
        subjects=_known(knows.subjects), attributes={name: _known(vs) for name, vs in knows.attributes.items()},
        languages=list(knows.languages),
        unnamed=f"drawn at random: {knows.caption_omit_probability:.0%} of each training caption's attributes were "
                "left out, so the model learnt that an unnamed attribute is any of its values; name it to choose it",
    )


class ActiveModelOut(BaseModel):
    """The model generations run on, as the Create page shows it."""

    name: str
    family: str | None = Field(description="sd15, sdxl, flux or sd3; None when its files cannot be read.")
    label: str = Field(description="The family as people name it: SD1.5, SDXL, FLUX.1 dev, FLUX.1 schnell, SD3; "
                       "'SD1.5 (guidance-embedded)' for an LCM-distilled UNet.")
    guidance_embedded: bool = Field(default=False, description="Its UNet takes the guidance as an embedding "
                                    "(LCM-distilled): a negative prompt costs a second UNet pass per step.")
    needs: list[str] = Field(description="What it needs beside its weights.")
    samplers: list[str] = Field(description="Sampler names that apply (params.scheduler).")
    controls: list[ControlRuleOut]
    problem: str | None = Field(default=None, description="Why its files cannot be read.")
    native_size: list[int] | None = Field(default=None, description="[width, height] it makes by default: the only "
                                          "size it was trained at when ``knows`` is set; None when unknown.")
    knows: ModelKnowsOut | None = Field(default=None, description="The subjects and attributes it knows, for a "
                                        "closed-vocabulary model (the embedded one); None for an open-vocabulary "
                                        "model (SD1.5, SDXL, FLUX.1): any words.")


def _native_size(profile: ModelProfile) -> list[int] | None:
    if profile.knows is not None:
        return [profile.knows.native_size.width, profile.knows.native_size.height]
    return None if profile.native_side is None else [profile.native_side, profile.native_side]


def active_model_out(profile: ModelProfile) -> ActiveModelOut:
    """The API's form of a model profile."""
    return ActiveModelOut(
        name=profile.name, family=profile.family, label=profile.label, guidance_embedded=profile.guidance_embedded,
        needs=list(profile.needs), samplers=list(profile.samplers), problem=profile.problem,
        native_size=_native_size(profile), knows=None if profile.knows is None else knows_out(profile.knows),
        controls=[ControlRuleOut(name=rule.name, applies=rule.applies, why=rule.why) for rule in profile.controls])


class ExpandRequest(StrictBody):
    """An intent to expand without generating, so the user can read and edit the prompt first."""

    intent: str = Field(min_length=1, max_length=MAX_TEXT, description="What the user wants, in any language.")
    intent_language: str | None = Field(default=None, min_length=1, max_length=16, description="BCP 47 tag.")
    negative_prompt: str | None = Field(default=None, max_length=MAX_TEXT)


class RecallOut(BaseModel):
    """Settings recalled from the user's kept images when the intent asks for "the usual"."""

    params: dict[str, Any]
    recipe: str | None
    style: str | None


class ExpansionOut(BaseModel):
    expansion_id: str = Field(description="Send it with POST /api/v1/generations to generate exactly this prompt.")
    expires_at: datetime = Field(description="When expansion_id stops being accepted.")
    final_prompt: str
    negative_prompt: str | None
    strategy: str
    version: str
    language: str | None
    details: dict[str, Any] = Field(default_factory=dict, description=DETAILS_DESCRIPTION)
    recall: RecallOut | None = Field(default=None, description="Set when the intent asked for 'the usual'.")


# --- gallery ------------------------------------------------------------------------------------------------


class ImageReactionOut(BaseModel):
    """Where the user stands with one image, from their actions on it."""

    liked: bool
    kept: bool
    downloaded: bool
    shared: bool
    discarded: bool


class GalleryItem(GenerationOut):
    reactions: dict[str, ImageReactionOut] = Field(description="By image id.")


class GalleryOut(BaseModel):
    items: list[GalleryItem]
    next_cursor: str | None


class RecordOut(BaseModel):
    """A generation with everything the user did with it."""

    generation: GalleryItem
    actions: list[ActionOut]
    children: list[str] = Field(description="Generations started from this one (regenerate, edit).")


# --- share links --------------------------------------------------------------------------------------------


class ShareCreate(StrictBody):
    image_id: str = Field(min_length=1, max_length=MAX_ID)
    client_event_id: str = Field(min_length=1, max_length=128, description="Client-made id; retries reuse it.")


class ShareLinkOut(BaseModel):
    id: str
    image_id: str
    generation_id: str
    url: str = Field(description="The public page: works for visitors who are not signed in.")
    image_url: str = Field(description="The public PNG.")
    created_at: datetime
    revoked_at: datetime | None
    active: bool


class SharedImageOut(BaseModel):
    prompt: str | None
    width: int
    height: int
    image_url: str
    created_at: datetime


# --- dashboard ----------------------------------------------------------------------------------------------


class DailyKeepRateOut(BaseModel):
    day: date
    images: int
    kept: int
    keep_rate: float | None = Field(description="kept / images; None on a day without images.")


class FunnelOut(BaseModel):
    generations: dict[JobStatus, int]
    images: int
    kept: int
    keep_rate: float
    by_action: dict[ActionType, int] = Field(description="Distinct images (or generations) per action type.")


class DatasetSizesOut(BaseModel):
    """Rows each export would write now (opted-out and deleted users left out)."""

    chains: int
    sft: int
    dpo: int
    pairs: int
    recipes: int


class ServedModelOut(BaseModel):
    base_model_id: str | None
    base_model_version: str | None
    expander_strategy: str | None
    expander_version: str | None
    generations: int
    images: int
    kept: int
    keep_rate: float


class RecipeRankOut(BaseModel):
    recipe: str
    style: str
    uses: int
    kept: int
    keep_rate: float
    keep_rate_low: float
    keep_rate_high: float


class DashboardOut(BaseModel):
    days: int
    users: int
    users_opted_out: int
    queue_depth: int
    keep_rate_by_day: list[DailyKeepRateOut] = Field(description="Every day of the window, oldest first.")
    funnel: FunnelOut
    datasets: DatasetSizesOut
    served_models: list[ServedModelOut]
    recipes: list[RecipeRankOut] = Field(description="Best first, by the lower end of the keep-rate interval.")
    model_versions: list[ModelVersionOut] = Field(description="Public registered versions, newest first.")
    training_runs: list[TrainingRunOut] = Field(description="The latest training runs, newest first.")
