"""What the shipped style presets mean to the embedded model, from its real ``knows.json``: presets whose words it
knows none of are marked as meaning nothing; the others say which attributes they set."""

from __future__ import annotations

import pytest

from imageloop.config import EMBEDDED_MODEL_DIR
from imageloop.engine.model_knowledge import ModelKnowledge, read_knowledge
from imageloop.prompts.style_fit import style_fit
from imageloop.prompts.styles import StylePreset, get_style, load_styles


@pytest.fixture(scope="module")
def knows() -> ModelKnowledge:
    found = read_knowledge(EMBEDDED_MODEL_DIR)
    assert found is not None
    return found


@pytest.mark.parametrize("name", ["anime", "watercolor", "pixel-art", "3d-render", "photographic", "gongbi"])
def test_presets_of_unknown_words_mean_nothing(knows: ModelKnowledge, name: str) -> None:
    fit = style_fit(get_style(name), knows)
    assert fit.means_nothing
    assert fit.note.startswith("means nothing to this model: it knows none of ")
    assert "{prompt}" not in fit.note


def test_the_anime_note_lists_the_presets_own_words(knows: ModelKnowledge) -> None:
    assert style_fit(get_style("anime"), knows).note == (
        "means nothing to this model: it knows none of anime artwork, cel shading, clean lineart, vibrant colors, "
        "key visual, detailed background")


@pytest.mark.parametrize(("name", "positive"), [
    ("cyberpunk", [("weather", "rain"), ("time", "night")]),  # rain streaks from "rain-soaked streets"
    ("noir", [("colour", "monochrome")]),
    ("cinematic", [("lighting", "cinematic")]),
    ("steampunk", [("colour", "sepia")]),
    ("chinese-ink", [("weather", "fog")]),
])
def test_presets_with_known_words_say_what_they_set(knows: ModelKnowledge, name: str,
                                                    positive: list[tuple[str, str]]) -> None:
    fit = style_fit(get_style(name), knows)
    assert not fit.means_nothing
    assert [(p.attribute, p.key) for p in fit.positive] == positive
    assert fit.note.startswith("to this model it only adds ")


def test_known_words_only_in_the_negative_still_count(knows: ModelKnowledge) -> None:
    fit = style_fit(StylePreset(name="x", name_en="X", name_zh="叉", positive="odd {prompt}", negative="rain"),
                    knows)
    assert not fit.means_nothing and fit.note.startswith("to this model it only steers away from weather 'rain'")


def test_every_shipped_preset_gets_a_note(knows: ModelKnowledge) -> None:
    fits = {name: style_fit(preset, knows) for name, preset in load_styles().items()}
    meaningless = {name for name, fit in fits.items() if fit.means_nothing}
    assert 10 < len(meaningless) < len(fits)  # most presets are open-vocabulary styles; some touch known attributes
