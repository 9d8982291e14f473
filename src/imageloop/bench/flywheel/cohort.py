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

Tastes range over the embedded model's attribute vocabulary (:mod:`imageloop.training.base.scenes`); every name
is checked: a mistake raises InvalidRequestError naming the field (and the allowed values).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from imageloop.config import PACKAGE_DIR
from imageloop.errors import InvalidRequestError
from imageloop.training.base.scenes import ATTRIBUTE_KEYS
from imageloop.training.base.sprites import SUBJECT_KEYS

__all__ = ["DEFAULT_COHORT", "LANGUAGES", "Cohort", "load_cohort", "parse_cohort"]

DEFAULT_COHORT = PACKAGE_DIR / "data" / "cohorts" / "default.yaml"
LANGUAGES = ("en", "zh")
SCENE_TASTES = tuple(name for name in ATTRIBUTE_KEYS if name != "subject")


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


def _intents(raw: dict[str, Any], languages: dict[str, float]) -> dict[str, tuple[str, ...]]:
    value = raw.get("intents")
    if not isinstance(value, dict):
        raise InvalidRequestError("intents", "must map each language to a list of phrasings", value=value)
    out: dict[str, tuple[str, ...]] = {}
    for lang in languages:
        phrasings = value.get(lang)
        if not isinstance(phrasings, list) or not phrasings or not all(isinstance(p, str) for p in phrasings):
            raise InvalidRequestError(f"intents.{lang}", "must be a non-empty list of strings", value=phrasings)
        missing = [p for p in phrasings if "{subject}" not in p]
        if missing:
            raise InvalidRequestError(f"intents.{lang}", "every phrasing needs a {subject} placeholder",
                                      value=missing)
        out[lang] = tuple(phrasings)
    return out


def parse_cohort(raw: Any) -> Cohort:
    """Validate a parsed cohort mapping; InvalidRequestError naming the first wrong field."""
    if not isinstance(raw, dict):
        raise InvalidRequestError("cohort", "must be a mapping", value=type(raw).__name__)
    known = {"languages", "patience", "taste_size", "taste_attributes", "sessions_per_week", "edit_probability",
             "share_probability", "subjects", "intents"}
    extra = sorted(set(raw) - known)
    if extra:
        raise InvalidRequestError(extra[0], "unknown cohort field", allowed=", ".join(sorted(known)))
    languages = _languages(raw)
    attributes = _names(raw, "taste_attributes", SCENE_TASTES, SCENE_TASTES)
    taste_size = _range(raw, "taste_size", [2, 3], 1, len(attributes))
    sessions = raw.get("sessions_per_week", 3)
    if not isinstance(sessions, int) or not 1 <= sessions <= 100:
        raise InvalidRequestError("sessions_per_week", "must be an integer from 1 to 100", value=sessions)
    return Cohort(
        languages=languages, patience=_range(raw, "patience", [1, 4], 0, 50), taste_size=taste_size,
        taste_attributes=attributes, sessions_per_week=sessions,
        edit_probability=_probability(raw, "edit_probability", 0.3),
        share_probability=_probability(raw, "share_probability", 0.2),
        subjects=_names(raw, "subjects", SUBJECT_KEYS, SUBJECT_KEYS), intents=_intents(raw, languages),
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
