"""Notes on a request from what a closed-vocabulary model knows (its ``knows.json``): a size other than the one it
was trained at, and scene attributes the prompt leaves to chance. Notes never refuse anything; an open-vocabulary
model (no ``knows.json``) gets none. The API, the page and ``imageloop generate`` show them."""

from __future__ import annotations

from contextlib import suppress
from typing import Any

from imageloop.engine.model_knowledge import ModelKnowledge, size_note, unnamed_note
from imageloop.errors import UnknownNameError
from imageloop.prompts.styles import get_style


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
