"""``knows.json``: what the embedded model knows, written beside every export from the training code itself.

The subjects (:mod:`~imageloop.training.base.sprites`), the scene attributes and their phrasings
(:mod:`~imageloop.training.base.scenes`), the caption languages and omission rate
(:mod:`~imageloop.training.base.captions`) and the image size are the model's whole vocabulary; the engine reads the
file with :func:`imageloop.engine.model_knowledge.read_knowledge`.
"""

from __future__ import annotations

from pathlib import Path

from imageloop.engine.model_knowledge import KNOWS_FILE, KnownValue, ModelKnowledge, NativeSize
from imageloop.files import atomic_write_text
from imageloop.training.base.captions import CAPTION_OMIT_PROB, LANGUAGES, SCENE_ORDER
from imageloop.training.base.scenes import IMAGE_SIZE, SCENE_ATTRIBUTES
from imageloop.training.base.sprites import SUBJECTS


def model_knowledge() -> ModelKnowledge:
    """The embedded model's vocabulary as the training code defines it."""
    return ModelKnowledge(
        native_size=NativeSize(width=IMAGE_SIZE, height=IMAGE_SIZE),
        languages=LANGUAGES,
        subjects=tuple(KnownValue(key=s.key, en=s.en, zh=s.zh) for s in SUBJECTS),
        attributes={name: tuple(KnownValue(key=v.key, en=v.en, zh=v.zh) for v in SCENE_ATTRIBUTES[name])
                    for name in SCENE_ORDER},
        caption_omit_probability=CAPTION_OMIT_PROB,
        nudity_free_training=True,  # every training image is a composite our scene code renders
    )


def write_knowledge(folder: Path) -> Path:
    """Write ``knows.json`` into model folder ``folder``; return its path."""
    target = folder / KNOWS_FILE
    atomic_write_text(target, model_knowledge().model_dump_json(indent=1) + "\n")
    return target
