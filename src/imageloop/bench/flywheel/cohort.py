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
(:mod:`imageloop.training.base.scenes`, which the prompt lexicon mirrors); every name is checked: a mistake raises
InvalidRequestError naming the field (and the allowed values). A slang intent asks for the phrase's meaning: the
user keeps only an image that shows it, and where the meaning and their taste name the same attribute, the
meaning wins. With ``slang_probability`` above 0, ``slang`` and ``slang_intents`` (for every language) are required.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from imageloop.config import PACKAGE_DIR
from imageloop.errors import InvalidRequestError
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


def _range(raw: dict[str, Any], field: str, default: list[int], low: int, high: int) -> tuple[int, int]:
    value = raw.get(field, default)
    if (not isinstance(value, list) or len(value) != 2 or not all(isinstance(v, int) for v in value)
            or not low <= value[0] <= value[1] <= high):
        raise InvalidRequestError(field, f"must be [min, max] integers with {low} <= min <= max <= {high}",
                                  value=value)
    return int(value[0]), int(value[1])


def _probability(raw: dict[str, Any], field: str, default: float) -> float:
    value = raw.get(field, default)
    if not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
        raise InvalidRequestError(field, "must be a number between 0 and 1", value=value)
    return float(value)


def _names(raw: dict[str, Any], field: str, allowed: tuple[str, ...], default: tuple[str, ...]) -> tuple[str, ...]:
    value = raw.get(field, list(default))
    if not isinstance(value, list) or not value:
        raise InvalidRequestError(field, "must be a non-empty list", value=value)
    unknown = [v for v in value if v not in allowed]
    if unknown:
        raise InvalidRequestError(field, f"unknown name(s) {unknown}", value=value, allowed=", ".join(allowed))
    return tuple(dict.fromkeys(value))


def _languages(raw: dict[str, Any]) -> dict[str, float]:
    value = raw.get("languages", {"en": 1.0})
    if not isinstance(value, dict) or not value or any(k not in LANGUAGES for k in value):
        raise InvalidRequestError("languages", "must map languages to shares", value=value,
                                  allowed=", ".join(LANGUAGES))
    if any(not isinstance(v, int | float) or v < 0 for v in value.values()) or sum(value.values()) <= 0:
        raise InvalidRequestError("languages", "shares must be non-negative numbers, not all zero", value=value)
    total = float(sum(value.values()))
    return {k: float(v) / total for k, v in value.items()}


def _intents(raw: dict[str, Any], languages: dict[str, float], name: str = "intents",
             placeholders: tuple[str, ...] = ("{subject}",)) -> dict[str, tuple[str, ...]]:
    value = raw.get(name)
    if not isinstance(value, dict):
        raise InvalidRequestError(name, "must map each language to a list of phrasings", value=value)
    out: dict[str, tuple[str, ...]] = {}
    for lang in languages:
        phrasings = value.get(lang)
        if not isinstance(phrasings, list) or not phrasings or not all(isinstance(p, str) for p in phrasings):
            raise InvalidRequestError(f"{name}.{lang}", "must be a non-empty list of strings", value=phrasings)
        for placeholder in placeholders:
            missing = [p for p in phrasings if placeholder not in p]
            if missing:
                raise InvalidRequestError(f"{name}.{lang}", f"every phrasing needs a {placeholder} placeholder",
                                          value=missing)
        out[lang] = tuple(phrasings)
    return out


def _slang(raw: dict[str, Any]) -> tuple[SlangPhrase, ...]:
    value = raw.get("slang", [])
    if not isinstance(value, list):
        raise InvalidRequestError("slang", "must be a list of {en, zh, means} phrases", value=value)
    phrases: list[SlangPhrase] = []
    for index, entry in enumerate(value):
        where = f"slang[{index}]"
        if not isinstance(entry, dict) or set(entry) != {"en", "zh", "means"}:
            raise InvalidRequestError(where, "must be a mapping with exactly en, zh and means", value=entry)
        for lang in LANGUAGES:
            if not isinstance(entry[lang], str) or not entry[lang].strip():
                raise InvalidRequestError(f"{where}.{lang}", "must be a non-empty string", value=entry[lang])
        means = entry["means"]
        if not isinstance(means, dict) or not 1 <= len(means) <= MAX_MEANING:
            raise InvalidRequestError(f"{where}.means", f"must map 1 to {MAX_MEANING} attributes to values",
                                      value=means)
        for attribute, key in means.items():
            if attribute not in SCENE_TASTES:
                raise InvalidRequestError(f"{where}.means.{attribute}", "unknown attribute", value=attribute,
                                          allowed=", ".join(SCENE_TASTES))
            if key not in ATTRIBUTE_KEYS[attribute]:
                raise InvalidRequestError(f"{where}.means.{attribute}", "unknown value", value=key,
                                          allowed=", ".join(ATTRIBUTE_KEYS[attribute]))
        meaning = {str(a): str(k) for a, k in means.items()}
        phrases.append(SlangPhrase(entry["en"].strip(), entry["zh"].strip(), meaning))
    return tuple(phrases)


def parse_cohort(raw: Any) -> Cohort:
    """Validate a parsed cohort mapping; InvalidRequestError naming the first wrong field."""
    if not isinstance(raw, dict):
        raise InvalidRequestError("cohort", "must be a mapping", value=type(raw).__name__)
    known = {"languages", "patience", "taste_size", "taste_attributes", "sessions_per_week", "edit_probability",
             "share_probability", "subjects", "intents", "slang_probability", "slang", "slang_intents",
             "newcomers_per_week"}
    extra = sorted(set(raw) - known)
    if extra:
        raise InvalidRequestError(extra[0], "unknown cohort field", allowed=", ".join(sorted(known)))
    languages = _languages(raw)
    attributes = _names(raw, "taste_attributes", SCENE_TASTES, SCENE_TASTES)
    taste_size = _range(raw, "taste_size", [2, 3], 1, len(attributes))
    sessions = raw.get("sessions_per_week", 3)
    if not isinstance(sessions, int) or not 1 <= sessions <= 100:
        raise InvalidRequestError("sessions_per_week", "must be an integer from 1 to 100", value=sessions)
    newcomers = raw.get("newcomers_per_week", 0)
    if not isinstance(newcomers, int) or isinstance(newcomers, bool) or not 0 <= newcomers <= 10_000:
        raise InvalidRequestError("newcomers_per_week", "must be an integer from 0 to 10000", value=newcomers)
    slang_probability = _probability(raw, "slang_probability", 0.0)
    slang = _slang(raw)
    slang_intents: dict[str, tuple[str, ...]] = {}
    if slang_probability > 0 and not slang:
        raise InvalidRequestError("slang", "must list at least one phrase when slang_probability > 0", value=[])
    if slang_probability > 0 or "slang_intents" in raw:
        slang_intents = _intents(raw, languages, "slang_intents", ("{subject}", "{slang}"))
    return Cohort(
        languages=languages, patience=_range(raw, "patience", [1, 4], 0, 50), taste_size=taste_size,
        taste_attributes=attributes, sessions_per_week=sessions,
        edit_probability=_probability(raw, "edit_probability", 0.3),
        share_probability=_probability(raw, "share_probability", 0.2),
        subjects=_names(raw, "subjects", SUBJECT_KEYS, SUBJECT_KEYS), intents=_intents(raw, languages),
        slang_probability=slang_probability, slang=slang, slang_intents=slang_intents, newcomers_per_week=newcomers,
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
