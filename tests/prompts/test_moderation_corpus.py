"""The moderation corpora: bypass attempts in English and Chinese (homoglyphs, format characters, combining accents,
CJK punctuation inside a word, traditional characters, synonyms, minors and extremism) must be blocked with their
category; ordinary prompts that share letters or characters with blocked terms, and every open-vocabulary intent of
the expander's test set, must pass."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from imageloop.prompts.moderation import TextModerator

DATA = Path(__file__).parents[1] / "data"
MODERATOR = TextModerator()


def _rows(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines() if line.strip()]


BYPASS = _rows("moderation_bypass.jsonl")
BENIGN = _rows("moderation_benign.jsonl")
OPENWORLD = _rows("openworld_intents.jsonl")


def test_the_corpora_are_large_enough_and_cover_both_languages() -> None:
    assert len(BYPASS) >= 100 and {row["language"] for row in BYPASS} == {"en", "zh"}
    assert len([row for row in BYPASS if row["language"] == "zh"]) >= 40
    assert {row["category"] for row in BYPASS} >= {"sexual", "sexual_minors", "violence", "hate", "extremism",
                                                   "self_harm"}
    assert len(BENIGN) >= 50 and len({row["id"] for row in BYPASS}) == len(BYPASS)


@pytest.mark.parametrize("row", BYPASS, ids=[row["id"] for row in BYPASS])
def test_every_bypass_attempt_is_blocked_with_its_category(row: dict[str, Any]) -> None:
    verdict = MODERATOR.verdict(row["text"])
    assert verdict.category == row["category"], (row["technique"], verdict)


@pytest.mark.parametrize("row", BENIGN, ids=[row["id"] for row in BENIGN])
def test_ordinary_prompts_are_not_blocked(row: dict[str, Any]) -> None:
    assert MODERATOR.verdict(row["text"]).allowed, MODERATOR.verdict(row["text"])


def test_every_open_vocabulary_intent_passes_moderation() -> None:
    blocked = {row["id"]: MODERATOR.verdict(row["intent"]) for row in OPENWORLD}
    assert len(blocked) >= 300
    assert {key: verdict for key, verdict in blocked.items() if not verdict.allowed} == {}


def test_a_chinese_intent_whose_english_reading_holds_a_benign_phrase_is_not_refused() -> None:
    from imageloop.prompts.expander.rules import RulesExpander
    from imageloop.prompts.moderation import TextModerator

    prompt = RulesExpander().expand("肉眼可见的星空").prompt  # 肉眼 reads "naked eye"
    assert "naked eye" in prompt and TextModerator().verdict(prompt).allowed
    assert not TextModerator().verdict("a naked eye and a naked woman").allowed
