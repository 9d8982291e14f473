"""Keep what the person asked for: the last word on every expansion, whichever strategy made it.

:func:`keep_intent` takes a strategy's expansion and the intent's :class:`~imageloop.prompts.expander.rules.ScenePlan`:

1. Tags the person negated go (in any strategy's output), and go to the negative prompt.
2. A tag the strategy ADDED is dropped when it holds an invented word (not English, not in the intent), brings in
   a person the intent did not name by that word ("lady with a lantern" beside an old man fishing), states a value
   contradicting one the intent set ("sunny" for a rainy night, from ``data/exclusive_values.yaml``), gives an
   attribute a second value the person did not ask for, or repeats a tag.
3. The person's own phrases and the values they named that are missing are put first: a strategy may add, never drop.
4. Every tag of the result carries its provenance: ``details["provenance"]`` = ``[{"tag", "source", "added"}]``.

:func:`separate` is applied after every later change (personal values, "the usual"): no word is in both prompts;
a term the current intent negated leaves the positive prompt, otherwise the positive prompt wins.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from typing import Any

import yaml

from imageloop.errors import ConfigError
from imageloop.prompts.expander._common import Expansion
from imageloop.prompts.lexicon import Lexicon, WeightedTag, normalise_text, parse_tag
from imageloop.prompts.usual import split_tags
from imageloop.prompts.words import unreal_words

__all__ = ["ExclusiveValues", "keep_intent", "load_exclusive_values", "provenance_of", "separate"]

EXCLUSIVE_RESOURCE = "data/exclusive_values.yaml"


class ExclusiveValues:
    """Which attribute value a tag states (``"golden hour"`` → ``("time", "dusk")``), by whole words."""

    def __init__(self, table: Mapping[str, Mapping[str, list[str]]]) -> None:
        self._words: list[tuple[re.Pattern[str], str, str]] = []
        for attribute, values in table.items():
            for key, words in values.items():
                for word in words:
                    pattern = re.compile(rf"(?<![a-z0-9]){re.escape(word.casefold())}(?![a-z0-9])")
                    self._words.append((pattern, attribute, key))

    def values_in(self, text: str) -> dict[str, set[str]]:
        """Attribute → the values ``text`` states."""
        norm = normalise_text(text)
        found: dict[str, set[str]] = {}
        for pattern, attribute, key in self._words:
            if pattern.search(norm):
                found.setdefault(attribute, set()).add(key)
        return found


@cache
def load_exclusive_values() -> ExclusiveValues:
    """The shipped table (ConfigError naming the file when it is malformed)."""
    raw = resources.files("imageloop").joinpath(EXCLUSIVE_RESOURCE).read_bytes()
    data = yaml.safe_load(raw)
    valid = isinstance(data, dict) and all(
        isinstance(values, dict) and all(isinstance(w, list) and all(isinstance(x, str) for x in w)
                                         for w in values.values())
        for values in data.values()
    )
    if not valid:
        raise ConfigError(f"{EXCLUSIVE_RESOURCE}: expected attribute -> value -> [words]")
    return ExclusiveValues(data)


@dataclass(frozen=True, slots=True)
class IntentTag:
    """A tag that stands for the person's own words (``translated`` for a Chinese intent)."""

    tag: WeightedTag
    translated: bool


def _key(text: str) -> str:
    return normalise_text(parse_tag(text).text)


def _singular(text: str) -> str:
    return " ".join(w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in text.split())


def _words(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"[a-z0-9][a-z0-9'-]*", _key(text)))


def _intent_words(intent: str, phrases: Iterable[str]) -> frozenset[str]:
    out: set[str] = set(re.findall(r"[a-z0-9][a-z0-9'-]*", normalise_text(intent)))
    for phrase in phrases:
        out |= _words(phrase)
    return frozenset(out)


def _negated(tag: str, negatives: Iterable[str]) -> bool:
    words = _words(tag)
    return any(_words(n) and _words(n) <= words for n in negatives)


def keep_intent(
    expansion: Expansion,
    *,
    intent: str,
    own: list[IntentTag],
    stated: Mapping[str, set[str]],
    negatives: list[str],
    lexicon: Lexicon,
    source: str | None = None,
) -> Expansion:
    """``expansion`` with the intent kept (see the module docstring). ``own`` are the person's tags (stated values
    and phrases), ``stated`` the attribute values they set, ``negatives`` the terms they negated, ``source`` the
    provenance of added tags (default: the expansion's strategy)."""
    exclusive = load_exclusive_values()
    added_by = source or expansion.strategy
    own_keys = {_key(t.tag.text): t for t in own}
    allowed_words = _intent_words(intent, [t.tag.text for t in own])
    chosen: dict[str, set[str]] = {a: set(v) for a, v in stated.items()}
    kept: list[tuple[WeightedTag, str, bool]] = []
    seen: set[str] = set()
    seen_singular: set[str] = set()
    dropped: list[dict[str, str]] = []
    for raw in split_tags(expansion.prompt):
        tag = parse_tag(raw)
        key = _key(tag.text)
        if not key or key in seen:
            continue
        if key not in own_keys and _singular(key) in seen_singular:
            dropped.append({"tag": key, "reason": "repeats a tag"})  # "mountain" beside "mountains"
            continue
        if _negated(key, negatives):
            dropped.append({"tag": key, "reason": "negated in the intent"})
            continue
        if key in own_keys:
            seen.add(key)
            seen_singular.add(_singular(key))
            kept.append((tag, "translation" if own_keys[key].translated else "intent", False))
            continue
        reason = _added_problem(key, allowed_words, chosen, exclusive, lexicon)
        if reason is not None:
            dropped.append({"tag": key, "reason": reason})
            continue
        for attribute, values in exclusive.values_in(key).items():
            chosen.setdefault(attribute, set()).update(values)
        seen.add(key)
        seen_singular.add(_singular(key))
        kept.append((tag, added_by, True))
    missing = [(t.tag, "translation" if t.translated else "intent", False) for k, t in own_keys.items()
               if k not in seen]
    tags = missing + kept
    prompt = ", ".join(tag.render() for tag, _, _ in tags)
    negative_terms = list(dict.fromkeys([*(_split(expansion.negative)), *negatives]))
    details = {
        **expansion.details,
        "provenance": [{"tag": tag.render(), "source": src, "added": added} for tag, src, added in tags],
    }
    if dropped:
        details["dropped"] = dropped
    return replace(expansion, prompt=prompt or expansion.prompt, negative=", ".join(negative_terms) or None,
                   details=details)


# People an added tag may not bring into the picture unless the intent names them by that word: "lady with a
# lantern" beside an old man fishing is a second subject, whatever else it adds. The lexicon's own tags ("lonely
# figure" of a bleak mood) are its values' meaning and stay.
_PEOPLE = frozenset((
    "man", "men", "woman", "women", "lady", "ladies", "girl", "girls", "boy", "boys", "child", "children", "kid",
    "kids", "person", "people", "persons", "guy", "guys", "gentleman", "gentlemen", "couple", "crowd", "family",
    "baby", "babies", "mother", "father", "mom", "dad", "grandmother", "grandfather", "grandma", "grandpa", "wife",
    "husband", "bride", "groom", "figure", "figures", "human", "humans", "teenager", "teenagers", "toddler",
))


@cache
def _lexicon_tags(lexicon: Lexicon) -> frozenset[str]:
    """Every tag a lexicon concept or completion adds (normalised)."""
    tags = [*lexicon.concepts.values(), *lexicon.completions.values()]
    return frozenset(normalise_text(tag.text) for group in tags for tag in group)


def _added_person(key: str, allowed_words: frozenset[str], lexicon: Lexicon) -> str | None:
    """The person an added tag brings that the intent did not name ("lady" in "book-lady"), or None."""
    if key in _lexicon_tags(lexicon):
        return None
    named = {w.removesuffix("'s") for w in allowed_words}
    words = {w.removesuffix("'s") for w in re.split(r"[^a-z']+", key) if w}
    return next((w for w in sorted(words & _PEOPLE) if w not in named), None)


def _added_problem(key: str, allowed_words: frozenset[str], chosen: Mapping[str, set[str]],
                   exclusive: ExclusiveValues, lexicon: Lexicon) -> str | None:
    """Why an added tag must go, or None."""
    invented = [w for w in unreal_words(key) if w not in allowed_words and lexicon.value_of(w) is None]
    if invented:
        return f"not an English word: {invented[0]}"
    person = _added_person(key, allowed_words, lexicon)
    if person is not None:
        return f"adds a person the intent did not name: {person}"
    for attribute, values in exclusive.values_in(key).items():
        if attribute in chosen and not values & chosen[attribute]:
            return f"contradicts {attribute} {'/'.join(sorted(chosen[attribute]))}"
    return None


def _split(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def separate(expansion: Expansion, negated_now: Iterable[str] = ()) -> Expansion:
    """``expansion`` with no term in both prompts: terms in ``negated_now`` (what the current intent negated) leave
    the positive prompt; any other overlap leaves the negative prompt."""
    negated = [_key(n) for n in negated_now if _key(n)]
    positive = [t for t in split_tags(expansion.prompt) if not _negated(t, negated)]
    positive_words = [_words(t) for t in positive]
    negative = [n for n in _split(expansion.negative)
                if _key(n) in negated or not any(_words(n) and _words(n) <= w for w in positive_words)]
    if len(positive) == len(split_tags(expansion.prompt)) and len(negative) == len(_split(expansion.negative)):
        return expansion
    details: dict[str, Any] = dict(expansion.details)
    if "provenance" in details:
        keys = {_key(t) for t in positive}
        details["provenance"] = [p for p in details["provenance"] if _key(p["tag"]) in keys]
    # A prompt whose every tag the intent negated is left empty rather than keep a word it excluded.
    return replace(expansion, prompt=", ".join(positive), negative=", ".join(negative) or None, details=details)


def provenance_of(prompt: str, before: list[dict[str, Any]], source: str) -> list[dict[str, Any]]:
    """Provenance for ``prompt`` after a later step changed it: tags already known keep theirs, new ones are
    ``source`` (added)."""
    known = {_key(p["tag"]): p for p in before}
    out = []
    for raw in split_tags(prompt):
        entry = known.get(_key(raw))
        out.append({**entry, "tag": raw} if entry else {"tag": raw, "source": source, "added": True})
    return out
