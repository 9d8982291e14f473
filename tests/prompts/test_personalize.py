from __future__ import annotations

from imageloop.prompts.lexicon import load_lexicon
from imageloop.prompts.personalize import apply_personal_values, personal_values

LEXICON = load_lexicon()


def test_values_a_user_adds_in_edits_and_keeps_become_their_habits() -> None:
    edits = [("fox", "fox, night, warm lighting"), ("castle", "castle, night")]
    values = personal_values(["owl, night, warm lighting"], edits, LEXICON, min_evidence=2)
    assert {a: v.key for a, v in values.items()} == {"time": "night", "lighting": "warm"}
    assert values["time"].evidence == 3 and values["time"].share == 1.0


def test_too_few_or_disagreeing_signs_give_no_habit() -> None:
    assert personal_values([], [("fox", "fox, night")], LEXICON, min_evidence=2) == {}
    mixed = personal_values(["a, night", "b, day", "c, night", "d, day"], [], LEXICON, min_evidence=2)
    assert "time" not in mixed  # half and half: no habit


def test_a_value_the_user_edits_away_counts_against_it() -> None:
    values = personal_values(["a, rain", "b, rain"], [("c, rain", "c, snow"), ("d, rain", "d, snow")], LEXICON)
    assert "weather" not in values  # rain 2 signs for, 2 against; snow 2 of 6


def test_the_subject_is_never_a_habit() -> None:
    assert "subject" not in personal_values(["fox, night", "fox, night"], [], LEXICON)


def test_habits_fill_open_attributes_and_replace_borrowed_values_but_never_the_intents() -> None:
    values = personal_values(["a, night, warm lighting, sepia", "b, night, warm lighting, sepia"], [], LEXICON)
    prompt, applied = apply_personal_values("fox, day, cold lighting", values, stated={"lighting"}, negative=None,
                                            lexicon=LEXICON)
    assert prompt == "fox, cold lighting, night, sepia"  # the intent's lighting stays, day is replaced
    assert sorted(v.attribute for v in applied) == ["colour", "time"]
    unchanged, none = apply_personal_values("fox, night, sepia", values, stated={"lighting"}, negative=None,
                                            lexicon=LEXICON)
    assert unchanged == "fox, night, sepia" and none == []


def test_a_habit_the_negative_prompt_excludes_is_not_added() -> None:
    values = personal_values(["a, rain", "b, rain"], [], LEXICON)
    prompt, applied = apply_personal_values("fox", values, stated=set(), negative="rain", lexicon=LEXICON)
    assert prompt == "fox" and applied == []
