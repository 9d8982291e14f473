"""Scoring of the open-vocabulary intent set: mentions, and every rate counted as its docstring says."""

from __future__ import annotations

from pathlib import Path

import pytest

from imageloop.bench.openworld import OpenWorldCase, TypedAsIs, load_openworld, mentions, score_openworld
from imageloop.errors import InvalidRequestError
from imageloop.prompts.expander import Expander, Expansion
from imageloop.prompts.language import Language

DATA = Path(__file__).resolve().parents[1] / "data" / "openworld_intents.jsonl"


class Fixed(Expander):
    name = "fixed"

    def __init__(self, answers: dict[str, tuple[str, str | None]]) -> None:
        self.answers = answers

    @property
    def version(self) -> str:
        return "1"

    def expand(self, intent: str, *, user: str | None = None, language: Language | None = None) -> Expansion:
        prompt, negative = self.answers[intent]
        return Expansion(prompt, negative, self.name, self.version, "en")


def case(intent: str, **fields: object) -> OpenWorldCase:
    base: dict[str, object] = {"id": intent, "language": "en", "split": "dev", "intent": intent, "subject": (),
                               "concepts": (), "negative": (), "must_not": ()}
    return OpenWorldCase(**{**base, **fields})  # type: ignore[arg-type]


def test_mentions_are_whole_words_with_plurals_folded_and_weights_ignored() -> None:
    assert mentions("(lighthouses:1.2), rain", ["lighthouse"])
    assert mentions("an old fisherman", ["old fisherman", "angler"])
    assert not mentions("snowy, rainbow", ["rain"])
    assert not mentions("fisherman old", ["old fisherman"])


def test_every_rate_is_counted_per_intent() -> None:
    cases = [
        case("a", subject=(("fox",),), concepts=(("rain",), ("night",)), must_not=("sunny",)),
        case("b", subject=(("owl",),), concepts=(("snow",),), negative=(("people",),)),
    ]
    fixed = Fixed({"a": ("fox, rain, sunny, snowysunshine", None), "b": ("snow, people, people", "people")})
    score = score_openworld("fixed", fixed, cases, language="en", split="dev")
    assert score.concept_recall == 3 / 5  # fox, rain, snow of fox, rain, night, owl, snow
    assert score.subject_retention == 0.5 and score.contradiction_rate == 0.5
    assert score.invented_word_rate == 0.5 and score.repeat_rate == 0.5
    assert score.negation_kept == 0.0  # "people" is in the negative prompt, but also in the positive one
    assert score.fallback_rate is None and len(score.failures) == 2


def test_the_shipped_set_is_large_enough_and_split() -> None:
    cases = load_openworld(DATA)
    for language in ("en", "zh"):
        for split in ("dev", "test"):
            assert len([c for c in cases if c.language == language and c.split == split]) >= 75
    assert all(c.subject or c.concepts for c in cases)


def test_a_malformed_line_names_its_place(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "x", "language": "en", "split": "train", "intent": "a"}\n', encoding="utf-8")
    with pytest.raises(InvalidRequestError, match=r"bad\.jsonl:1"):
        load_openworld(path)


def test_the_intent_as_typed_is_the_baseline() -> None:
    assert TypedAsIs().expand("雨夜里的小狐狸").prompt == "雨夜里的小狐狸"
