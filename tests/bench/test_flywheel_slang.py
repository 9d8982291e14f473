"""Community slang and newcomers in the flywheel simulation: the cohort fields and their checks, what a slang
session wants, the default cohort's phrases (which the rules strategy alone cannot map), and the keep rate split
by session kind, counted from the service's records."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from imageloop.bench.flywheel.arms import ARMS, parse_arms
from imageloop.bench.flywheel.cohort import load_cohort, parse_cohort
from imageloop.bench.flywheel.report import GROUPS, wilson
from imageloop.bench.flywheel.run import FlywheelConfig, arm_settings, result_payload, run_flywheel
from imageloop.bench.flywheel.users import SimulatedUser, edited_prompt, newcomers
from imageloop.errors import InvalidRequestError
from imageloop.prompts.expander.chain import ChainExpander
from imageloop.prompts.expander.rules import RulesExpander
from imageloop.prompts.lexicon import load_lexicon
from imageloop.training.base.captions import Language, canonical_phrase
from tests.bench.test_flywheel import _config, _forced_judge, _records, tiny  # noqa: F401  (tiny: the model fixture)

PLAIN = {"intents": {"en": ["a {subject}"]}}
SLANG = {"slang_probability": 0.5, "slang_intents": {"en": ["a {subject}, {slang}"]},
         "slang": [{"en": "big yikes", "zh": "芭比Q了", "means": {"weather": "rain", "mood": "bleak"}}]}


def test_the_default_cohort_speaks_slang_the_rules_cannot_map() -> None:
    cohort = load_cohort()
    assert len(cohort.slang) >= 8 and cohort.slang_probability > 0 and cohort.newcomers_per_week > 0
    lexicon = load_lexicon()
    rules = RulesExpander(lexicon)
    chain = ChainExpander([rules], lexicon=lexicon)  # the chain with the rules strategy only
    for phrase in cohort.slang:
        assert phrase.en and phrase.zh and 1 <= len(phrase.means) <= 3
        assert lexicon.find_terms(phrase.en) == lexicon.find_terms(phrase.zh) == []  # no word of it is in the lexicon
        # The phrase after "a fox, " (language detected), and in every phrasing the simulated users send (their
        # language given, as the simulation sends it).
        intents: list[tuple[str, Language | None]] = [(f"a fox, {phrase.en}", None), (f"a fox, {phrase.zh}", None)]
        for language, phrasings in cohort.slang_intents.items():
            lang: Language = "zh" if language == "zh" else "en"
            subject = canonical_phrase("subject", "fox", lang)
            intents += [(p.format(subject=subject, slang=phrase.text(lang)), lang) for p in phrasings]
        for intent, lang in intents:
            for expander in (rules, chain):
                expansion = expander.expand(intent, language=lang)
                assert expansion is not None
                named = lexicon.attributes_in(expansion.prompt)
                leaked = {a: v for a, v in phrase.means.items() if v in named.get(a, set())}
                assert not leaked, (expander.name, intent, expansion.prompt, leaked)


def test_slang_fields_are_checked_and_mistakes_name_the_field() -> None:
    cohort = parse_cohort({**PLAIN, **SLANG, "newcomers_per_week": 3})
    assert cohort.slang[0].means == {"weather": "rain", "mood": "bleak"} and cohort.newcomers_per_week == 3
    assert parse_cohort(PLAIN).slang == () and parse_cohort(PLAIN).newcomers_per_week == 0

    def bad(**changes: Any) -> dict[str, Any]:
        return {**PLAIN, **SLANG, **changes}

    wrong_value = [{"en": "x", "zh": "y", "means": {"weather": "hail"}}]
    with pytest.raises(InvalidRequestError, match=r"slang\[0\]\.means\.weather") as caught:
        parse_cohort(bad(slang=wrong_value))
    assert caught.value.field == "slang[0].means.weather" and "rain" in str(caught.value)  # names the allowed values
    with pytest.raises(InvalidRequestError, match=r"slang\[0\]\.means\.smell"):
        parse_cohort(bad(slang=[{"en": "x", "zh": "y", "means": {"smell": "rain"}}]))
    with pytest.raises(InvalidRequestError, match=r"slang\[0\]\.means"):
        parse_cohort(bad(slang=[{"en": "x", "zh": "y", "means": {}}]))
    with pytest.raises(InvalidRequestError, match=r"slang\[0\]\.zh"):
        parse_cohort(bad(slang=[{"en": "x", "zh": "", "means": {"weather": "rain"}}]))
    with pytest.raises(InvalidRequestError, match=r"slang\[0\]"):
        parse_cohort(bad(slang=[{"en": "x", "means": {"weather": "rain"}}]))
    with pytest.raises(InvalidRequestError, match="slang"):
        parse_cohort(bad(slang=[]))
    with pytest.raises(InvalidRequestError, match=r"slang_intents\.en"):
        parse_cohort(bad(slang_intents={"en": ["a {subject}"]}))
    with pytest.raises(InvalidRequestError, match="slang_probability"):
        parse_cohort(bad(slang_probability=1.5))
    with pytest.raises(InvalidRequestError, match="newcomers_per_week"):
        parse_cohort(bad(newcomers_per_week=-1))


def test_a_slang_session_wants_the_meaning_over_the_taste() -> None:
    cohort = parse_cohort({**PLAIN, **SLANG, "slang_probability": 1.0})
    user = SimulatedUser("u", "en", 2, {"weather": "snow", "time": "night"}, 0)
    intent = user.intent(cohort, np.random.default_rng(0))
    assert intent.text == f"a {intent.subject}, big yikes" and intent.slang == "big yikes"
    assert user.wants(intent) == {"weather": "rain", "time": "night", "mood": "bleak"}
    seen = {"subject": intent.subject, "weather": "rain", "time": "night", "mood": "bleak"}
    assert user.fits(seen, intent)
    assert not user.fits({**seen, "weather": "snow"}, intent)  # their taste, but not what the phrase means
    assert not user.fits({**seen, "mood": "cheerful"}, intent)
    # An edit spells out the missing part of the meaning in the user's words.
    assert edited_prompt("a fox, big yikes", user, {**seen, "mood": "cheerful"}, intent) == "a fox, big yikes, bleak"
    # Newcomers are new users of their week, the same for every run with the seed.
    two = replace(cohort, newcomers_per_week=2)
    week2 = newcomers(two, 2, seed=0)
    assert [u.name for u in week2] == ["sim-w2-0000", "sim-w2-0001"] and week2 == newcomers(two, 2, seed=0)


def test_keep_rate_is_split_by_slang_and_newcomers(tiny: Path, tmp_path: Path) -> None:  # noqa: F811
    # Every intent is slang: "big yikes" (rain, bleak) is kept by everyone, whatever their taste, because the judge
    # sees rain and bleak in every image; "touch grass" (clear) never is.
    grass = {"en": "touch grass", "zh": "摸草", "means": {"weather": "clear"}}
    cohort = parse_cohort({"subjects": ["fox"], "taste_attributes": ["weather"], "taste_size": [1, 1],
                           "patience": [0, 0], "sessions_per_week": 2, "newcomers_per_week": 1, **PLAIN, **SLANG,
                           "slang_probability": 1.0, "slang": [*SLANG["slang"], grass]})
    config = FlywheelConfig(**{**_config(tmp_path, tiny).__dict__, "cohort": cohort, "users": 2, "weeks": 2,
                               "arms": parse_arms("frozen")})
    run = run_flywheel(config, _forced_judge({"subject": "fox", "weather": "rain", "mood": "bleak"}))
    week1, week2 = run.rows
    gens, _ = _records(arm_settings(config, ARMS["frozen"]))
    assert len(gens) == 14  # patience 0: one try per session
    assert week1.kept + week2.kept == sum("big yikes" in g.intent for g in gens) > 0
    assert any("touch grass" in g.intent for g in gens)
    assert week1.groups["newcomer"][0] == week1.sessions == 6 and "returning" not in week1.groups
    assert week2.groups["newcomer"][0] == 2 and week2.groups["returning"][0] == 6 and week2.sessions == 8
    for row in run.rows:
        assert row.groups["slang"] == (row.sessions, row.kept) and "plain" not in row.groups
        assert row.groups["newcomer"][1] + row.groups.get("returning", (0, 0))[1] == row.kept
    payload = result_payload(config, run)
    split = payload["arms"]["frozen"][1]["groups"]
    assert set(split) == set(GROUPS) and split["plain"]["sessions"] == 0
    kept, sessions = split["slang"]["kept"], split["slang"]["sessions"]
    assert split["slang"]["ci95"] == list(wilson(kept, sessions))
