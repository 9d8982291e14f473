"""``knows.json`` comes from the training code: the committed file is what the code generates, and the export
writes it beside the weights (the export itself is tested in test_base_train)."""

from __future__ import annotations

import json
from pathlib import Path

from imageloop.config import EMBEDDED_MODEL_DIR
from imageloop.engine.model_knowledge import KNOWS_FILE, read_knowledge
from imageloop.training.base.captions import CAPTION_OMIT_PROB
from imageloop.training.base.knows import model_knowledge, write_knowledge
from imageloop.training.base.scenes import ATTRIBUTE_KEYS, IMAGE_SIZE
from imageloop.training.base.sprites import SUBJECTS


def test_the_committed_knows_json_is_what_the_training_code_generates() -> None:
    committed = json.loads((EMBEDDED_MODEL_DIR / KNOWS_FILE).read_text(encoding="utf-8"))
    assert committed == json.loads(model_knowledge().model_dump_json()), \
        "regenerate it: python -c 'from imageloop.config import EMBEDDED_MODEL_DIR as d; " \
        "from imageloop.training.base.knows import write_knowledge as w; w(d)'"


def test_it_lists_every_subject_and_attribute_value_of_the_scenes() -> None:
    knows = model_knowledge()
    assert tuple(s.key for s in knows.subjects) == ATTRIBUTE_KEYS["subject"] == tuple(s.key for s in SUBJECTS)
    for name, values in knows.attributes.items():
        assert tuple(v.key for v in values) == ATTRIBUTE_KEYS[name]
        assert all(v.en and v.zh for v in values)
    assert knows.native_size.width == knows.native_size.height == IMAGE_SIZE
    assert knows.caption_omit_probability == CAPTION_OMIT_PROB


def test_write_and_read_back(tmp_path: Path) -> None:
    path = write_knowledge(tmp_path)
    assert path == tmp_path / KNOWS_FILE
    assert read_knowledge(tmp_path) == model_knowledge()
