from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from imageloop.prompts.expander.postprocess import clean_llm_output, prompt_problems
from imageloop.prompts.lexicon import load_lexicon

LEXICON = load_lexicon()


def test_loops_labels_and_foreign_text_are_cleaned() -> None:
    raw = "Tags: snowstorm, snowy scene, penguin, snowy landscape, snowy terrain, 夜晚, \"cute\".\n\nExplanation: ..."
    assert clean_llm_output(raw, LEXICON) == "snowstorm, snowy scene, penguin, snowy landscape, cute"


def test_the_guard_keeps_the_intents_attributes_and_weights_are_clamped() -> None:
    cleaned = clean_llm_output("wood, sunset, spooky, (bleak:3", LEXICON, {"place": "forest", "time": "night"})
    assert cleaned == "forest, night, wood, spooky, bleak"  # sunset contradicted the intent's night
    assert clean_llm_output("(bleak:3), (fog), ((rain))", LEXICON) == "(bleak:1.6), (fog:1.1), rain"


def test_prompt_problems() -> None:
    assert prompt_problems("rain, (monochrome:1.2), lonely figure") == []
    assert prompt_problems("") == ["empty"]
    assert "unbalanced brackets" in prompt_problems("(rain")
    assert "no English word" in prompt_problems("城堡")
    assert "repeated tags" in prompt_problems("rain, rain")
    assert "weight outside 0-2" in prompt_problems("(rain:5)")


def test_unbalanced_square_brackets_are_dropped() -> None:
    assert clean_llm_output("a[, [b, c]]], [d]", LEXICON) == "a, b, c, [d]"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_whatever_the_model_writes_the_result_is_empty_or_valid(raw: str) -> None:
    cleaned = clean_llm_output(raw, LEXICON, {"weather": "rain"})
    assert cleaned == "" or prompt_problems(cleaned) == []
