"""What a style preset means to a closed-vocabulary model (one with a ``knows.json``, the embedded model).

The presets are written for open-vocabulary models: "anime artwork of {prompt}, cel shading, ..." steers SD1.5, but
the embedded model was trained on 24 subjects and 7 scene attributes only; every other word is one it never learnt
(its tokenizer maps most of them to the unknown token). A preset whose templates contain none of the model's known
phrases means nothing to it; one that does changes exactly those attributes: "cyberpunk" brings rain and night,
"noir" black and white. Words that are only part of a known phrase ("lighting" without warm, cold or cinematic)
choose no value and count as unknown. Such presets stay selectable: they do no harm, and they do steer other models.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from imageloop.engine.model_knowledge import KnownPhrase, ModelKnowledge, find_known
from imageloop.prompts.styles import PROMPT_PLACEHOLDER, StylePreset

__all__ = ["StyleFit", "style_fit"]

_LINKING = re.compile(r"^(?:of|depicting)\s+|\s+(?:of|depicting)$")


@dataclass(frozen=True)
class StyleFit:
    """A preset seen by one model: the known phrases of its positive and negative templates, and a note saying what
    the preset does to the model (or that it means nothing to it)."""

    positive: tuple[KnownPhrase, ...]
    negative: tuple[KnownPhrase, ...]
    note: str

    @property
    def means_nothing(self) -> bool:
        """Whether the model knows none of the preset's words: applying it changes nothing the model draws."""
        return not self.positive and not self.negative


def _tags(template: str) -> list[str]:
    """The preset's own tags: its comma-separated parts without the ``{prompt}`` slot and its linking words."""
    tags = (_LINKING.sub("", part.replace(PROMPT_PLACEHOLDER, " ").strip()).strip() for part in template.split(","))
    return [tag for tag in tags if tag]


def _describe(phrases: tuple[KnownPhrase, ...]) -> str:
    return ", ".join(f"{p.attribute} '{p.phrase}'" for p in phrases)


def style_fit(preset: StylePreset, knowledge: ModelKnowledge) -> StyleFit:
    """What ``preset`` means to the model that ``knowledge`` describes."""
    positive = find_known(preset.positive.replace(PROMPT_PLACEHOLDER, ","), knowledge)
    negative = find_known(preset.negative, knowledge)
    if not positive and not negative:
        note = f"means nothing to this model: it knows none of {', '.join(_tags(preset.positive))}"
        return StyleFit(positive, negative, note)
    parts = []
    if positive:
        parts.append(f"adds {_describe(positive)}")
    if negative:
        parts.append(f"steers away from {_describe(negative)}")
    note = f"to this model it only {'; '.join(parts)}; it knows none of the other words"
    return StyleFit(positive, negative, note)
