"""What a closed-vocabulary model knows (``knows.json``): reading it, finding its phrases in a prompt the way its
tokenizer splits text, and the notes on a size it was not trained at and on attributes left to chance."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from imageloop.config import EMBEDDED_MODEL_DIR
from imageloop.engine.model_files import content_hash
from imageloop.engine.model_knowledge import (
    KNOWS_FILE,
    ModelKnowledge,
    find_known,
    read_knowledge,
    size_note,
    unnamed_attributes,
    unnamed_note,
    words,
)
from imageloop.errors import ModelLoadError


@pytest.fixture(scope="module")
def knows() -> ModelKnowledge:
    found = read_knowledge(EMBEDDED_MODEL_DIR)
    assert found is not None, "the embedded model ships its knows.json"
    return found


def test_the_embedded_model_knows_24_subjects_and_7_attributes_at_64x64(knows: ModelKnowledge) -> None:
    assert len(knows.subjects) == 24 and knows.languages == ("en", "zh")
    assert list(knows.attributes) == ["place", "weather", "time", "lighting", "colour", "mood", "composition"]
    assert [v.key for v in knows.attributes["weather"]] == ["clear", "rain", "snow", "fog"]
    assert (knows.native_size.width, knows.native_size.height) == (64, 64)
    fox = next(s for s in knows.subjects if s.key == "fox")
    assert fox.en[0] == "fox" and fox.zh == ("狐狸",)


def test_words_split_as_the_tokenizer_does() -> None:
    assert words("A close-up (rain:1.2)，下雪") == ("a", "close", "-", "up", "(", "rain", ":", "1", ".", "2", ")", "，",
                                                 "下", "雪")


@pytest.mark.parametrize(("text", "expected"), [
    ("a fox in the rain at night", [("subject", "fox"), ("weather", "rain"), ("time", "night")]),
    ("rain-soaked streets", [("weather", "rain")]),  # "streets" is not "street"
    ("snowy peaks", [("place", "mountains")]),  # the longer phrase wins over "snow"
    ("color, photo", []),  # a comma splits "color photo"
    ("一只狐狸，下雪的雪山", [("subject", "fox"), ("weather", "snow"), ("place", "mountains")]),
    ("(black and white:1.3) close-up", [("colour", "monochrome"), ("composition", "closeup")]),
    ("anime artwork, cel shading", []),
])
def test_known_phrases_are_found_left_to_right(knows: ModelKnowledge, text: str,
                                               expected: list[tuple[str, str]]) -> None:
    assert [(p.attribute, p.key) for p in find_known(text, knows)] == expected


def test_the_attributes_a_prompt_leaves_to_chance(knows: ModelKnowledge) -> None:
    assert unnamed_attributes("a fox, forest, clear weather, day, warm light, colorful, cheerful, wide shot",
                              knows) == ()
    assert unnamed_attributes("a fox, forest", knows) == ("weather", "time", "lighting", "colour", "mood",
                                                          "composition")
    note = unnamed_note("a fox", knows)
    assert note is not None and "names no place, weather" in note and "clear weather / rain / snow / fog" in note
    assert unnamed_note("a fox, forest, clear weather, day, warm light, colorful, cheerful, wide shot", knows) is None


def test_a_size_other_than_the_trained_one_gets_a_note(knows: ModelKnowledge) -> None:
    assert size_note(knows, None, None) is None and size_note(knows, 64, 64) is None
    note = size_note(knows, 128, None)
    assert note is not None and note.startswith("128×64 is not this model's size") and "64×64 only" in note


def test_a_folder_without_knows_json_is_open_vocabulary(tmp_path: Path) -> None:
    assert read_knowledge(tmp_path) is None


def test_a_broken_knows_json_names_the_file_and_field(tmp_path: Path) -> None:
    (tmp_path / KNOWS_FILE).write_text('{"native_size": {"width": 0, "height": 64}}')
    with pytest.raises(ModelLoadError, match=r"knows.json: invalid: .*native_size.width"):
        read_knowledge(tmp_path)


def test_knows_json_is_not_part_of_the_model_version(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"weights")
    before = content_hash(folder)
    shutil.copy(EMBEDDED_MODEL_DIR / KNOWS_FILE, folder / KNOWS_FILE)
    assert content_hash(folder) == before
