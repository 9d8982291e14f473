from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from imageloop.prompts.expander.rules import RulesExpander
from imageloop.prompts.lexicon import load_lexicon
from imageloop.prompts.weights import parse_weights

DATA = Path(__file__).resolve().parents[1] / "data"
RULES = RulesExpander()


def test_bleak_in_english_and_chinese_gives_the_same_prompt() -> None:
    en = RULES.expand("I want that really bleak feeling")
    zh = RULES.expand("想要那种很丧的感觉")
    lexicon = load_lexicon()
    assert lexicon.attributes_in(en.prompt) == lexicon.attributes_in(zh.prompt)
    assert "dejected" in zh.prompt  # the person's own word, glossed, beside what the lexicon makes of it
    assert "(monochrome:1.2)" in en.prompt and "rain" in en.prompt and "lonely figure" in en.prompt
    assert (en.language, zh.language) == ("en", "zh")
    assert en.strategy == "rules" and en.version.startswith("rules-6+lexicon-")


def test_a_chinese_concept_word_the_dictionary_lacks_is_kept_as_the_concept_name() -> None:
    prompt = RULES.expand("冬日的森林").prompt  # CC-CEDICT has no 冬日; the lexicon reads it as its concept "winter"
    assert "winter" in prompt.split(", ") and "snow" in prompt


def test_a_chinese_words_other_meaning_is_not_kept_beside_the_tag() -> None:
    # 特写: CC-CEDICT's first sense is "feature article"; the lexicon's close-up is another of its senses.
    tags = RULES.expand("一杯咖啡的特写").prompt.split(", ")
    assert "close-up" in tags and "feature article" not in tags
    # 海边: "seaside" is the same meaning as the lexicon's beach, and the person's own word stays.
    tags = RULES.expand("海边的小屋").prompt.split(", ")
    assert "seaside" in tags and "beach" in tags


def test_a_lexicon_character_inside_a_known_piece_of_an_unknown_word_is_no_match() -> None:
    # CC-CEDICT lacks 海盗船 but knows 海盗 (pirate): its 海 is no sea, and the pirate stays in the prompt.
    tags = RULES.expand("一艘海盗船在暴风雨中").prompt.split(", ")
    assert "pirate" in tags and "ocean" not in tags and "beach" not in tags
    assert "rain" in RULES.expand("樱花雨").prompt.split(", ")  # 樱花 + 雨: the lexicon's 雨 is a piece of its own


def test_explicit_words_beat_implied_ones_and_specific_beats_broad() -> None:
    found = load_lexicon().attributes_in(RULES.expand("bleak mood on a sunny beach").prompt)
    assert found["weather"] == {"clear"} and found["mood"] == {"bleak"} and found["place"] == {"beach"}
    found = load_lexicon().attributes_in(RULES.expand("gloomy, but in full colour").prompt)
    assert found["colour"] == {"colour"}


def test_negated_terms_go_to_the_negative_prompt() -> None:
    expansion = RULES.expand("a fox in the forest, no rain, 不要大雾")
    assert expansion.negative == "rain, fog, thick fog"  # the tag, and the person's word beside it
    assert "rain" not in expansion.prompt


def test_words_outside_the_lexicon_are_kept_in_english_and_an_unreadable_intent_falls_back_to_itself() -> None:
    # "sunset" is the person's word, "dusk" the tag the embedded model knows for it: both are kept.
    assert RULES.expand("an old lighthouse at sunset").prompt == "sunset, old lighthouse, dusk"
    assert RULES.expand("孤独的宇航员").prompt.startswith("astronaut")  # CC-CEDICT, not the lexicon
    expansion = RULES.expand("🙂🙂")
    assert expansion.prompt == "🙂🙂" and expansion.details["fallback"] is True


def test_alternatives_only_fill_open_attributes() -> None:
    expansion = RULES.expand("a castle at night")
    assert expansion.alternatives
    lexicon = load_lexicon()
    for alternative in expansion.alternatives:
        found = lexicon.attributes_in(alternative)
        assert found["subject"] == {"castle"} and found["time"] == {"night"}


def test_rules_score_well_on_the_test_sets() -> None:
    lexicon = load_lexicon()
    for name in ("intents_en.jsonl", "intents_zh.jsonl"):
        rows = [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines()]
        assert len(rows) >= 60
        hits = expected = 0
        for row in rows:
            found = lexicon.attributes_in(RULES.expand(row["intent"]).prompt)
            expected += len(row["expected"])
            hits += sum(key in found.get(attribute, set()) for attribute, key in row["expected"].items())
        assert hits / expected > 0.9, name


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_any_intent_gives_a_parseable_non_empty_prompt(intent: str) -> None:
    expansion = RULES.expand(intent or "x")
    # Empty only for an empty intent, or one that names only what to leave out ("0没": its words are the negative).
    only_excludes = expansion.details.get("only_excludes") and (expansion.negative or "").strip()
    assert expansion.prompt.strip() or not (intent or "x").strip() or only_excludes
    assert parse_weights(expansion.prompt) or only_excludes


def test_a_place_with_nobody_in_it_gets_no_lonely_figure() -> None:
    for intent in ("教室，空无一人", "空荡荡的地铁站", "a deserted beach", "an abandoned factory"):
        tags = RULES.expand(intent).prompt.split(", ")
        assert "lonely figure" not in tags and "bleak" not in tags, intent
    assert "deserted" in RULES.expand("教室，空无一人").prompt.split(", ")
