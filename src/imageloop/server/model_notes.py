"""Notes on a request from what the served model knows (its ``knows.json``): a size other than the one it was
trained at, and scene attributes the prompt leaves to chance. Notes never refuse anything; an open-vocabulary
model (no ``knows.json``) gets none."""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from imageloop.config import Settings
from imageloop.engine.model_knowledge import ModelKnowledge, size_note, unnamed_note
from imageloop.engine.model_profile import model_profile
from imageloop.errors import UnknownNameError
from imageloop.prompts.styles import get_style
from imageloop.storage import GenerationRecord


@dataclass(frozen=True)
class ServedModel:
    """The configured model's name (as its generations record it) and what it knows (None: open-vocabulary)."""

    name: str
    knows: ModelKnowledge | None


def served_model(settings: Settings) -> ServedModel:
    """Read once at start-up, from the model's files (no weights loaded)."""
    profile = model_profile(settings.engine.model, settings)
    return ServedModel(profile.name, profile.knows)


def _side(params: dict[str, Any], name: str) -> int | None:
    value = params.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def request_notes(knows: ModelKnowledge | None, params: dict[str, Any], prompt: str | None = None,
                  style: str | None = None) -> list[str]:
    """The notes for a request with ``params`` (width, height) and, when known, the ``prompt`` that runs with
    ``style`` applied as the engine applies it."""
    if knows is None:
        return []
    notes = [size_note(knows, _side(params, "width"), _side(params, "height"))]
    if prompt is not None:
        text = prompt
        if style:
            with suppress(UnknownNameError):  # refused at submit; an old record may name a preset since removed
                text = get_style(style).apply(prompt)[0]
        notes.append(unnamed_note(text, knows))
    return [note for note in notes if note is not None]


def record_notes(served: ServedModel, record: GenerationRecord) -> list[str]:
    """The notes for a stored generation, when the served model made it (or will)."""
    if record.base_model_id not in (None, served.name):
        return []
    params = dict(record.params)
    if record.images:  # the size that ran (a recipe or the model's default may have filled it in)
        params.update(width=record.images[0].width, height=record.images[0].height)
    return request_notes(served.knows, params, record.final_prompt, record.style)
