"""Style presets: named positive/negative prompt templates, shipped in ``imageloop/data/styles.yaml``.

A preset is found by its slug (``cinematic``), its English name (``Cinematic``, any case, spaces or dashes) or its
Chinese name (``电影感``). Applying one puts the user's prompt into the preset's ``{prompt}`` template and adds the
preset's negative prompt after the user's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from imageloop.errors import ConfigError, UnknownNameError

__all__ = ["PROMPT_PLACEHOLDER", "StylePreset", "apply_style", "get_style", "load_styles"]

PROMPT_PLACEHOLDER = "{prompt}"
STYLES_RESOURCE = "data/styles.yaml"
_SLUG = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"


class StylePreset(BaseModel):
    """One style: a slug, its English and Chinese names, a positive template with ``{prompt}``, a negative."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    name: str = Field(pattern=_SLUG, description="Slug used in the API and CLI, e.g. 'analog-film'.")
    name_en: str = Field(min_length=1, description="English display name.")
    name_zh: str = Field(min_length=1, description="Chinese display name.")
    positive: str = Field(description="Positive prompt template; '{prompt}' marks where the user's prompt goes.")
    negative: str = Field(default="", description="Negative prompt added after the user's negative prompt.")

    @field_validator("positive")
    @classmethod
    def _has_one_placeholder(cls, value: str) -> str:
        if value.count(PROMPT_PLACEHOLDER) != 1:
            raise ValueError(f"must contain {PROMPT_PLACEHOLDER} exactly once")
        return value

    def apply(self, prompt: str, negative: str = "") -> tuple[str, str]:
        """Return ``(positive, negative)``: the template filled with ``prompt``, and ``negative`` + the preset's."""
        text = prompt.strip()
        positive = self.positive.replace(PROMPT_PLACEHOLDER, text)
        if not text:
            positive = _tidy_separators(positive)
        return positive, _join_negatives(negative, self.negative)


def _join_negatives(user: str, style: str) -> str:
    """The user's negative prompt, then the style's terms that the user did not already write."""
    have = {term.strip().casefold() for term in user.split(",")}
    extra = [term.strip() for term in style.split(",") if term.strip() and term.strip().casefold() not in have]
    return ", ".join(part for part in (user.strip(), ", ".join(extra)) if part)


def _tidy_separators(text: str) -> str:
    """Remove the dangling commas an empty ``{prompt}`` leaves behind."""
    text = re.sub(r"\s+,", ",", text)
    text = re.sub(r",(\s*,)+", ",", text)
    return text.strip(" ,")


def _describe(index: int, entry: object) -> str:
    name = entry.get("name") if isinstance(entry, dict) else None
    return f"entry {index}" + (f" ({name!r})" if isinstance(name, str) else "")


def _read_yaml(path: Path | None) -> tuple[Any, str]:
    source: Traversable = resources.files("imageloop").joinpath(STYLES_RESOURCE) if path is None else path
    where = str(source)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"style presets file {where} cannot be read: {exc}") from exc
    try:
        return yaml.safe_load(text), where
    except yaml.YAMLError as exc:
        raise ConfigError(f"style presets file {where} is not valid YAML: {exc}") from exc


def _parse_entry(index: int, entry: object, where: str) -> StylePreset:
    try:
        return StylePreset.model_validate(entry)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'entry'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"style presets file {where}: {_describe(index, entry)}: {problems}") from exc


def _check_unique(presets: list[StylePreset], where: str) -> None:
    seen: dict[str, str] = {}
    for preset in presets:
        for key in _lookup_keys(preset):
            owner = seen.setdefault(key, preset.name)
            if owner != preset.name:
                raise ConfigError(f"style presets file {where}: {preset.name!r} and {owner!r} share the name {key!r}")


def _parse_styles(data: object, where: str) -> dict[str, StylePreset]:
    if not isinstance(data, dict) or not isinstance(data.get("styles"), list):
        raise ConfigError(f"style presets file {where}: expected a mapping with a 'styles' list")
    presets = [_parse_entry(i, entry, where) for i, entry in enumerate(data["styles"], start=1)]
    if not presets:
        raise ConfigError(f"style presets file {where}: 'styles' is empty")
    _check_unique(presets, where)
    return {preset.name: preset for preset in presets}


@cache
def _shipped_styles() -> dict[str, StylePreset]:
    return _parse_styles(*_read_yaml(None))


def load_styles(path: Path | None = None) -> dict[str, StylePreset]:
    """All presets by slug, in file order, from ``path`` or the file shipped with the package.

    Raises ConfigError naming the file and the broken entry (its position and name) when the file is unreadable,
    not YAML, or holds an invalid or duplicate preset. The shipped file is read once per process.
    """
    if path is None:
        return dict(_shipped_styles())
    return _parse_styles(*_read_yaml(path))


def _normalise(name: str) -> str:
    return re.sub(r"[\s_]+", "-", name.strip().casefold())


def _lookup_keys(preset: StylePreset) -> set[str]:
    return {_normalise(preset.name), _normalise(preset.name_en), _normalise(preset.name_zh)}


def get_style(name: str, styles: Mapping[str, StylePreset] | None = None) -> StylePreset:
    """The preset whose slug, English name or Chinese name is ``name`` (case, spaces and ``_``/``-`` ignored).

    Looks in ``styles`` (default: the shipped presets). Raises UnknownNameError listing the known slugs.
    """
    presets = load_styles() if styles is None else styles
    wanted = _normalise(name)
    for preset in presets.values():
        if wanted in _lookup_keys(preset):
            return preset
    raise UnknownNameError("style", name, presets.keys())


def apply_style(prompt: str, negative: str, style: str | None) -> tuple[str, str]:
    """Return ``(prompt, negative)`` with the named style applied; unchanged when ``style`` is None or blank.

    Raises UnknownNameError (field ``style``) when no preset has that name.
    """
    if style is None or not style.strip():
        return prompt, negative
    return get_style(style).apply(prompt, negative)
