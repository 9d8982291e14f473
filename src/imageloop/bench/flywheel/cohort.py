"""The cohort file: who the simulated users of ``imageloop bench flywheel`` are.

A cohort is YAML (the default ships as ``imageloop/data/cohorts/default.yaml``)::

    languages: {en: 0.7, zh: 0.3}      # share of users per language (EN or ZH), normalised
    patience: [1, 4]                   # rerolls a user tries before giving up: uniform integer in [min, max]
    taste_size: [2, 3]                 # how many attributes a user cares about: uniform integer in [min, max]
    taste_attributes: [weather, time, lighting, colour, mood, composition, place]
    sessions_per_week: 3               # intents each user sends per simulated week
    edit_probability: 0.3              # chance that a reroll is a prompt edit (toward the taste) instead
    share_probability: 0.2             # chance that a kept image is shared rather than downloaded
    subjects: [fox, penguin, house]    # optional: subjects the users ask for (default: all of the model's)
    intents:                           # vague phrasings; {subject} is the subject in the user's language
      en: ["a {subject}", "something with a {subject} for my wall"]
      zh: ["{subject}", "来一张{subject}的图"]
    slang_probability: 0.5             # optional: share of intents that use a community phrase (default 0)
    slang:                             # community phrases (EN and ZH); each means 1-3 attribute values
      - {en: "goblin mode", zh: "哥布林模式", means: {weather: fog, mood: bleak}}
    slang_intents:                     # phrasings of a slang intent, with {subject} and {slang}
      en: ["a {subject}, {slang}"]
      zh: ["{subject}，{slang}"]
    newcomers_per_week: 8              # optional: users who join each week with no history (default 0)

Tastes and slang meanings range over the embedded model's attribute vocabulary
(:mod:`imageloop.training.base.scenes`, which the prompt lexicon mirrors). The file is validated by a pydantic
model; every name is checked, and a mistake raises InvalidRequestError naming the field (``slang[0].means.weather``)
and the allowed values. A slang intent asks for the phrase's meaning: the
user keeps only an image that shows it, and where the meaning and their taste name the same attribute, the
meaning wins. With ``slang_probability`` above 0, ``slang`` and ``slang_intents`` (for every language) are required.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from imageloop.config import PACKAGE_DIR
from imageloop.errors import InvalidRequestError
from imageloop.training.base.captions import Language
from imageloop.training.base.scenes import ATTRIBUTE_KEYS
from imageloop.training.base.sprites import SUBJECT_KEYS

__all__ = ["DEFAULT_COHORT", "LANGUAGES", "Cohort", "SlangPhrase", "load_cohort", "parse_cohort"]

DEFAULT_COHORT = PACKAGE_DIR / "data" / "cohorts" / "default.yaml"
LANGUAGES = ("en", "zh")
SCENE_TASTES = tuple(name for name in ATTRIBUTE_KEYS if name != "subject")
MAX_MEANING = 3  # attribute values one slang phrase may mean


@dataclass(frozen=True)
class SlangPhrase:
    """A community phrase in both languages and the attribute values it means (attribute -> value key)."""

    en: str
    zh: str
    means: dict[str, str]

    def text(self, language: str) -> str:
        """The phrase as a user of ``language`` says it."""
        return self.zh if language == "zh" else self.en


@dataclass(frozen=True)
class Cohort:
    """A validated cohort (see the module docstring for the file format)."""

    languages: dict[str, float]
    patience: tuple[int, int]
    taste_size: tuple[int, int]
    taste_attributes: tuple[str, ...]
    sessions_per_week: int
    edit_probability: float
    share_probability: float
    subjects: tuple[str, ...]
    intents: dict[str, tuple[str, ...]]
    slang_probability: float = 0.0
    slang: tuple[SlangPhrase, ...] = ()
    slang_intents: dict[str, tuple[str, ...]] = field(default_factory=dict)
    newcomers_per_week: int = 0


class _Slang(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    en: str = Field(min_length=1)
    zh: str = Field(min_length=1)
    means: dict[str, str] = Field(min_length=1, max_length=MAX_MEANING)

    @field_validator("en", "zh")
    @classmethod
    def _stripped(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()

    @field_validator("means")
    @classmethod
    def _known_values(cls, value: dict[str, str]) -> dict[str, str]:
        for attribute, key in value.items():
            if attribute not in SCENE_TASTES:
                raise _FieldError(attribute, f"unknown attribute (allowed: {', '.join(SCENE_TASTES)})", attribute)
            if key not in ATTRIBUTE_KEYS[attribute]:
                raise _FieldError(attribute, f"unknown value {key!r} (allowed: {', '.join(ATTRIBUTE_KEYS[attribute])})",
                                  key)
        return value


Phrasings = Annotated[list[str], Field(min_length=1)]


def _english_only() -> dict[Language, float]:
    return {"en": 1.0}


class _CohortFile(BaseModel):
    """The file as written; :func:`parse_cohort` turns it into a :class:`Cohort`. Fields are declared in the order
    their checks need (``languages`` before the phrasings that must cover them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    languages: dict[Language, float] = Field(default_factory=_english_only, min_length=1)
    patience: tuple[int, int] = (1, 4)
    taste_attributes: list[str] = Field(default_factory=lambda: list(SCENE_TASTES), min_length=1)
    taste_size: tuple[int, int] = (2, 3)
    sessions_per_week: int = Field(default=3, ge=1, le=100)
    edit_probability: float = Field(default=0.3, ge=0.0, le=1.0)
    share_probability: float = Field(default=0.2, ge=0.0, le=1.0)
    subjects: list[str] = Field(default_factory=lambda: list(SUBJECT_KEYS), min_length=1)
    intents: dict[str, Phrasings]
    slang_probability: float = Field(default=0.0, ge=0.0, le=1.0)
    slang: list[_Slang] = Field(default_factory=list)
    slang_intents: dict[str, Phrasings] = Field(default_factory=dict)
    newcomers_per_week: int = Field(default=0, ge=0, le=10_000)

    @field_validator("languages")
    @classmethod
    def _shares(cls, value: dict[str, float]) -> dict[str, float]:
        if any(share < 0 for share in value.values()) or sum(value.values()) <= 0:
            raise ValueError("shares must be non-negative numbers, not all zero")
        total = sum(value.values())
        return {lang: share / total for lang, share in value.items()}

    @field_validator("patience")
    @classmethod
    def _patience(cls, value: tuple[int, int]) -> tuple[int, int]:
        return _ordered(value, 0, 50)

    @field_validator("taste_attributes")
    @classmethod
    def _attributes(cls, value: list[str]) -> list[str]:
        return _known(value, SCENE_TASTES)

    @field_validator("taste_size")
    @classmethod
    def _taste_size(cls, value: tuple[int, int], info: ValidationInfo) -> tuple[int, int]:
        return _ordered(value, 1, len(info.data.get("taste_attributes", SCENE_TASTES)))

    @field_validator("subjects")
    @classmethod
    def _subjects(cls, value: list[str]) -> list[str]:
        return _known(value, SUBJECT_KEYS)

    @model_validator(mode="after")
    def _phrasings_and_slang(self) -> _CohortFile:
        _cover("intents", self.intents, self.languages, ("{subject}",))
        if self.slang_probability > 0 and not self.slang:
            raise _FieldError("slang", "must list at least one phrase when slang_probability > 0", [])
        if self.slang_probability > 0 or self.slang_intents:
            _cover("slang_intents", self.slang_intents, self.languages, ("{subject}", "{slang}"))
        return self


class _FieldError(ValueError):
    """A failed check naming the field it is about, below the location pydantic gives (a key of a mapping, or a
    field of a check across fields)."""

    def __init__(self, field: str, message: str, value: Any) -> None:
        super().__init__(message)
        self.field, self.message, self.value = field, message, value


def _ordered(value: tuple[int, int], low: int, high: int) -> tuple[int, int]:
    if not low <= value[0] <= value[1] <= high:
        raise ValueError(f"must be [min, max] integers with {low} <= min <= max <= {high}")
    return value


def _known(value: list[str], allowed: tuple[str, ...]) -> list[str]:
    unknown = [v for v in value if v not in allowed]
    if unknown:
        raise ValueError(f"unknown name(s) {unknown} (allowed: {', '.join(allowed)})")
    return list(dict.fromkeys(value))


def _cover(field: str, phrasings: dict[str, list[str]], languages: Iterable[str],
           placeholders: tuple[str, ...]) -> None:
    for lang in languages:
        if lang not in phrasings:
            raise _FieldError(f"{field}.{lang}", "must be a non-empty list of strings", None)
        for placeholder in placeholders:
            missing = [p for p in phrasings[lang] if placeholder not in p]
            if missing:
                raise _FieldError(f"{field}.{lang}", f"every phrasing needs a {placeholder} placeholder", missing)


def _location(loc: tuple[int | str, ...]) -> str:
    """pydantic's error location as the field path users write: ``slang[0].means``."""
    path = ""
    for part in loc:
        if part != "[key]":  # pydantic's marker for a mapping key: the key itself is already in the path
            path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path


def parse_cohort(raw: Any) -> Cohort:
    """Validate a parsed cohort mapping; InvalidRequestError naming the first wrong field."""
    if not isinstance(raw, dict):
        raise InvalidRequestError("cohort", "must be a mapping", value=type(raw).__name__)
    try:
        data = _CohortFile.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, _FieldError):
            where = ".".join(part for part in (_location(tuple(error["loc"])), cause.field) if part)
            raise InvalidRequestError(where, cause.message, value=cause.value) from None
        message = str(error["msg"]).removeprefix("Value error, ")
        where = _location(tuple(error["loc"])) or "cohort"
        raise InvalidRequestError(where, message, value=error.get("input")) from None
    return Cohort(
        languages={str(lang): share for lang, share in data.languages.items()}, patience=data.patience,
        taste_size=data.taste_size,
        taste_attributes=tuple(data.taste_attributes), sessions_per_week=data.sessions_per_week,
        edit_probability=data.edit_probability, share_probability=data.share_probability,
        subjects=tuple(data.subjects), intents={lang: tuple(data.intents[lang]) for lang in data.languages},
        slang_probability=data.slang_probability,
        slang=tuple(SlangPhrase(p.en, p.zh, dict(p.means)) for p in data.slang),
        slang_intents={lang: tuple(data.slang_intents[lang]) for lang in data.languages if lang in data.slang_intents},
        newcomers_per_week=data.newcomers_per_week,
    )


def load_cohort(path: Path | None = None) -> Cohort:
    """Read and validate a cohort file (default: the shipped cohort)."""
    path = path or DEFAULT_COHORT
    if not path.is_file():
        raise InvalidRequestError("cohort", "no such cohort file", value=str(path))
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InvalidRequestError("cohort", f"not valid YAML: {exc}", value=str(path)) from exc
    return parse_cohort(raw)
