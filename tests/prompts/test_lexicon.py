from __future__ import annotations

import pytest

from imageloop.prompts.language import detect_language, resolve_language
from imageloop.prompts.lexicon import load_lexicon, normalise_text, parse_tag


def test_vocabulary_mirrors_the_embedded_models_scenes() -> None:
    from imageloop.training.base.scenes import SCENE_ATTRIBUTES
    from imageloop.training.base.sprites import SUBJECTS

    lexicon = load_lexicon()
    for attribute, values in SCENE_ATTRIBUTES.items():
        assert set(lexicon.keys(attribute)) == {v.key for v in values}
        for value in values:
            words = lexicon.vocabulary[attribute][value.key]
            assert (tuple(words.en), tuple(words.zh)) == (value.en, value.zh)
    assert {s.key: (s.en, s.zh) for s in SUBJECTS} == {
        key: (tuple(w.en), tuple(w.zh)) for key, w in lexicon.vocabulary["subject"].items()
    }


def test_english_terms_match_whole_words_only() -> None:
    lexicon = load_lexicon()
    terms = [m.term for m in lexicon.find_terms("sunset over the cathedral, classical music")]
    assert terms == ["sunset", "cathedral"]  # no "sun" in sunset, no "cat", no "class"


def test_longest_term_wins_and_concepts_win_ties() -> None:
    lexicon = load_lexicon()
    [match] = lexicon.find_terms("宁静的雪山")
    assert match.concept == "snowy-mountains"
    [match] = lexicon.find_terms("snowy mountains")
    assert match.concept == "snowy-mountains"


@pytest.mark.parametrize(
    ("text", "negated"),
    [("no rain please", "rain"), ("a street without fog", "fog"), ("不要下雨", "下雨"), ("没有雾", "雾")],
)
def test_negations_mark_the_following_term(text: str, negated: str) -> None:
    matches = load_lexicon().find_terms(text)
    assert [m.term for m in matches if m.negated] == [negated]


def test_attributes_in_reads_weighted_prompts_and_ignores_negated_terms() -> None:
    lexicon = load_lexicon()
    found = lexicon.attributes_in("(monochrome:1.2), a fox, ((rain)), cinematic lighting, not snowing")
    assert found == {"colour": {"monochrome"}, "subject": {"fox"}, "weather": {"rain"}, "lighting": {"cinematic"}}


def test_normalise_text_folds_width_and_case() -> None:
    assert normalise_text("  ＢＬＥＡＫ\u3000Feeling ") == "bleak feeling"


def test_parse_tag() -> None:
    assert parse_tag("(monochrome:1.2)").weight == 1.2
    assert parse_tag("(rain)").weight == pytest.approx(1.1)
    assert parse_tag("lonely figure").render() == "lonely figure"


@pytest.mark.parametrize(
    ("text", "language"),
    [("想要那种很丧的感觉", "zh"), ("emo一点的感觉", "zh"), ("a photo of 城堡 at night in the rain", "en"), ("", "en")],
)
def test_detect_language(text: str, language: str) -> None:
    assert detect_language(text) == language


def test_given_language_wins_when_supported() -> None:
    assert resolve_language("bleak", "zh-Hant") == "zh"
    assert resolve_language("很丧", "fr") == "zh"
