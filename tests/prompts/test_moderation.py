from __future__ import annotations

import pytest

from imageloop.config import Settings
from imageloop.errors import ModerationError
from imageloop.prompts.moderation import TextModerator, normalise_for_moderation
from imageloop.prompts.service import PromptService

MODERATOR = TextModerator()


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("a porn scene", "sexual"),
        ("P0RN", "sexual"),
        ("a p o r n image", "sexual"),
        ("n.u.d.e woman", "sexual"),
        ("ｎｕｄｅ beach", "sexual"),
        ("$ex scene", "sexual"),
        ("色 情图片", "sexual"),
        ("一张裸体照片", "sexual"),
        ("a decapitated knight", "violence"),
        ("血腥的肢解现场", "violence"),
        ("heil hitler poster", "hate"),
        ("一个性感的小女孩", "sexual_minors"),
        ("sexy schoolgirl", "sexual_minors"),
        ("nude child", "sexual_minors"),
    ],
)
def test_blocked_texts_name_their_category(text: str, category: str) -> None:
    assert MODERATOR.verdict(text).category == category
    with pytest.raises(ModerationError) as error:
        MODERATOR.check(text, field="intent")
    assert error.value.category == category and error.value.http_status == 400
    assert "intent:" in error.value.message


@pytest.mark.parametrize(
    "text",
    [
        "a child flying a kite in the park",
        "sexy sports car at sunset",
        "Essex countryside, classical cathedral",
        "4k photo of a 2024 sunset",
        "想要那种很丧的感觉",
        "a knight fighting a dragon",
        "一个小女孩在海边放风筝",
        "i want a bleak feeling",
    ],
)
def test_ordinary_texts_pass(text: str) -> None:
    assert MODERATOR.verdict(text).allowed


def test_normalisation_folds_width_case_leetspeak_and_spacing() -> None:
    assert normalise_for_moderation("Ｎ＠ＫＥＤ") == "naked"
    assert normalise_for_moderation("p-o-r-n and 色 * 情") == "porn and 色情"
    assert normalise_for_moderation("a\u200bb") == "ab"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("p\u043ern", "porn"),  # Cyrillic o
        ("n\u0430ked", "naked"),  # Cyrillic a
        ("\u03bdude", "vude"),  # Greek nu reads as v: the table maps look-alikes, not meanings
        ("por\u00adn", "porn"),  # soft hyphen
        ("p\u200dor\u2060n\ufeff", "porn"),  # zero-width joiner, word joiner, byte-order mark
        ("nu\u0308de\u0301", "nude"),  # combining accents
        ("色。情", "色情"),
        ("色，情、图片", "色情图片"),
        ("裸體照片", "裸体照片"),  # traditional to simplified
        ("15-year-old", "15-year-old"),  # a number with a unit is not leetspeak
    ],
)
def test_normalisation_defeats_confusables_format_characters_accents_and_cjk_punctuation(
    text: str, expected: str
) -> None:
    assert normalise_for_moderation(text) == expected


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("p\u043ern", "sexual"),
        ("n\u0430ked woman", "sexual"),
        ("por\u00adn", "sexual"),
        ("nüde", "sexual"),
        ("色。情图片", "sexual"),
        ("色情圖片", "sexual"),
        ("a woman in her birthday suit", "sexual"),
        ("sexy 10yo", "sexual_minors"),
        ("sexy kiddo", "sexual_minors"),
        ("性感的小朋友", "sexual_minors"),
        ("isis propaganda poster", "extremism"),
    ],
)
def test_the_findings_of_the_probe_are_blocked(text: str, category: str) -> None:
    assert MODERATOR.verdict(text).category == category


@pytest.mark.parametrize("text", ["sussex", "therapist", "grape", "scunthorpe", "色彩", "情侣", "金色，情侣在海边",
                                  "形形色色的小朋友", "一个活泼性格的小女孩", "不要血腥", "a knight, no gore"])
def test_words_that_contain_or_border_a_blocked_term_pass(text: str) -> None:
    assert MODERATOR.verdict(text).allowed


def test_a_bad_pattern_in_the_blocklist_is_a_config_error() -> None:
    from imageloop.errors import ConfigError
    from imageloop.prompts.moderation import _Matcher

    with pytest.raises(ConfigError, match="moderation pattern"):
        _Matcher([], ["(unclosed"])


def test_settings_extend_the_blocklists_and_can_turn_moderation_off(tmp_path) -> None:  # type: ignore[no-untyped-def]
    extra = {"brand": ["acme logo"], "violence": ["电锯"]}
    settings = Settings(data_dir=tmp_path, prompts={"moderation_extra_terms": extra})
    service = PromptService(settings)
    with pytest.raises(ModerationError) as error:
        service.expand("a poster with the ACME  logo")
    assert error.value.category == "brand"
    with pytest.raises(ModerationError):
        service.expand("电 锯")
    assert TextModerator(enabled=False).verdict("porn").allowed
