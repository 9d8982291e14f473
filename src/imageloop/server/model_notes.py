"""The served model as the notes on requests need it (see :mod:`imageloop.engine.request_notes`), and the notes of
a stored generation."""

from __future__ import annotations

from dataclasses import dataclass

from imageloop.config import Settings
from imageloop.engine.model_knowledge import ModelKnowledge
from imageloop.engine.model_profile import model_profile
from imageloop.engine.request_notes import request_notes
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


def record_notes(served: ServedModel, record: GenerationRecord) -> list[str]:
    """The notes for a stored generation, when the served model made it (or will)."""
    if record.base_model_id not in (None, served.name):
        return []
    params = dict(record.params)
    if record.images:  # the size that ran (a recipe or the model's default may have filled it in)
        params.update(width=record.images[0].width, height=record.images[0].height)
    return request_notes(served.knows, params, record.final_prompt, record.style)
