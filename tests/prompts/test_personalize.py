from __future__ import annotations

from imageloop.prompts.lexicon import load_lexicon
from imageloop.prompts.personalize import PersonalValue, apply_personal_values, personal_values

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


def test_what_a_trained_expander_added_counts_as_the_intents_meaning() -> None:
    from imageloop.prompts.expander._common import Expansion
    from imageloop.prompts.expander.chain import learned_meaning

    lexicon = load_lexicon()
    provenance = [{"tag": "fox", "source": "intent", "added": False},
                  {"tag": "fog", "source": "local_llm", "added": True},
                  {"tag": "bleak", "source": "local_llm", "added": True}]
    trained = Expansion("fox, fog, bleak", None, "local_llm", "SmolLM2-135M-Instruct+expander-v3.1a2b3c4d", "en",
                        details={"provenance": provenance, "added": ["fog", "bleak", "sunny"]})
    assert {"weather", "mood"} <= learned_meaning(trained, lexicon)  # what the guard let through, not "sunny"
    assert "time" not in learned_meaning(trained, lexicon)
    base = Expansion("fox, fog", None, "local_llm", "SmolLM2-135M-Instruct+base", "en", details={"added": ["fog"]})
    rules = Expansion("fox, fog", None, "rules", "rules-2", "en", details={"provenance": provenance})
    assert learned_meaning(base, lexicon) == learned_meaning(rules, lexicon) == set()
    # So a habit fills what is left open and never overwrites the learned meaning.
    habits = {"weather": PersonalValue("weather", "rain", 4, 1.0), "time": PersonalValue("time", "night", 4, 1.0)}
    prompt, applied = apply_personal_values(trained.prompt, habits, stated=learned_meaning(trained, lexicon),
                                            negative=None, lexicon=lexicon)
    assert [v.attribute for v in applied] == ["time"] and "fog" in prompt and "rain" not in prompt
