"""The prompt lexicon (``data/prompt_lexicon.yaml``): the embedded model's attribute vocabulary plus vague words.

:meth:`Lexicon.find_terms` finds every known term in a text — English terms as whole words, Chinese terms as
substrings, longest first, never overlapping — and marks terms right after a negation ("no rain", "不要下雨").
:meth:`Lexicon.attributes_in` reads which attribute values a prompt names (what the benchmark scores), and
:meth:`Lexicon.canonical` gives the English tag the model was trained on for a value.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from imageloop.errors import ConfigError

__all__ = [
    "ATTRIBUTE_ORDER",
    "Lexicon",
    "TermMatch",
    "WeightedTag",
    "load_lexicon",
    "normalise_text",
    "parse_tag",
]

LEXICON_RESOURCE = "data/prompt_lexicon.yaml"
# Subject first, then the scene attributes in the order the embedded model's captions use.
ATTRIBUTE_ORDER = ("subject", "place", "weather", "time", "lighting", "colour", "mood", "composition")
_WEIGHTED_TAG = re.compile(r"^\(\s*(?P<text>[^():]+?)\s*(?::\s*(?P<weight>[0-9]*\.?[0-9]+)\s*)?\)$")


class _Phrasings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    en: list[str] = Field(default_factory=list)
    zh: list[str] = Field(default_factory=list)


class _Concept(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    en: list[str] = Field(default_factory=list)
    zh: list[str] = Field(default_factory=list)
    tags: list[str] = Field(min_length=1)


class _Completion(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    tags: list[str] = Field(min_length=1)


class _LexiconFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int
    vocabulary: dict[str, dict[str, _Phrasings]]
    synonyms: dict[str, dict[str, _Phrasings]] = Field(default_factory=dict)
    concepts: list[_Concept] = Field(default_factory=list)
    completions: list[_Completion] = Field(default_factory=list)
    negations: _Phrasings = Field(default_factory=_Phrasings)
    stopwords_en: list[str] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class WeightedTag:
    """One prompt tag with its A1111 weight (1.0 = plain)."""

    text: str
    weight: float = 1.0

    def render(self) -> str:
        """The tag as prompt text: ``text`` or ``(text:1.2)``."""
        return self.text if self.weight == 1.0 else f"({self.text}:{self.weight:g})"


@dataclass(frozen=True, slots=True)
class TermMatch:
    """A known term found in a normalised text: a vocabulary value (``attribute``/``key``) or a ``concept``."""

    start: int
    end: int
    term: str
    attribute: str | None = None
    key: str | None = None
    concept: str | None = None
    negated: bool = False


@dataclass(frozen=True, slots=True)
class _TermInfo:
    attribute: str | None
    key: str | None
    concept: str | None


def normalise_text(text: str) -> str:
    """NFKC (full-width → half-width), case-folded, curly quotes straightened, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).casefold().replace("’", "'").replace("‘", "'")
    return re.sub(r"\s+", " ", text).strip()


def parse_tag(raw: str) -> WeightedTag:
    """``"(monochrome:1.2)"`` → ``WeightedTag("monochrome", 1.2)``; ``"(x)"`` → weight 1.1; plain text → 1.0."""
    text = raw.strip()
    match = _WEIGHTED_TAG.match(text)
    if match is None:
        return WeightedTag(text)
    weight = float(match["weight"]) if match["weight"] else 1.1
    return WeightedTag(match["text"].strip(), weight)


def _is_ascii(term: str) -> bool:
    return all(ord(ch) < 128 for ch in term)


def _alternation(terms: Iterable[str]) -> str:
    # Longest first, so "snowy mountains" wins over "snowy" at the same position.
    return "|".join(re.escape(term) for term in sorted(set(terms), key=lambda t: (-len(t), t)))


class Lexicon:
    """The parsed lexicon file with compiled term matchers."""

    def __init__(self, data: _LexiconFile, digest: str) -> None:
        self.digest = digest
        self.vocabulary = data.vocabulary
        self.synonyms = data.synonyms
        self.concepts: dict[str, tuple[WeightedTag, ...]] = {
            c.name: tuple(parse_tag(t) for t in c.tags) for c in data.concepts
        }
        self.completions: dict[str, tuple[WeightedTag, ...]] = {
            c.name: tuple(parse_tag(t) for t in c.tags) for c in data.completions
        }
        self.stopwords = frozenset(word.casefold() for word in data.stopwords_en)
        self._values: dict[str, _TermInfo] = {}
        for table in (data.synonyms, data.vocabulary):  # vocabulary last: its phrasings win over synonyms
            for attribute, values in table.items():
                for key, words in values.items():
                    for term in (*words.en, *words.zh):
                        self._values[normalise_text(term)] = _TermInfo(attribute, key, None)
        terms = dict(self._values)
        for concept in data.concepts:  # a concept wins over a value spelled the same ("雪山": mountains + snow)
            for term in (*concept.en, *concept.zh):
                terms[normalise_text(term)] = _TermInfo(None, None, concept.name)
        self._terms = terms
        self._all_pattern = self._compile(terms)
        self._value_pattern = self._compile(self._values)
        negations = [normalise_text(n) for n in (*data.negations.en, *data.negations.zh)]
        en_neg = [n for n in negations if _is_ascii(n)]
        zh_neg = [n for n in negations if not _is_ascii(n)]
        # A negation right before the term, or one word before it ("no heavy rain").
        en_rule = rf"(?:^|[^a-z0-9'])(?:{_alternation(en_neg)})\s+(?:\w+\s+)?$"
        self._negation_en = re.compile(en_rule) if en_neg else None
        self._negation_zh = re.compile(rf"(?:{_alternation(zh_neg)})\s*$") if zh_neg else None

    @staticmethod
    def _compile(terms: Mapping[str, _TermInfo]) -> re.Pattern[str]:
        ascii_terms = [t for t in terms if _is_ascii(t)]
        other_terms = [t for t in terms if not _is_ascii(t)]
        parts = []
        if ascii_terms:  # whole words only: "sun" must not match inside "sunset", "emo" may touch Chinese
            parts.append(rf"(?<![a-z0-9])(?:{_alternation(ascii_terms)})(?![a-z0-9])")
        if other_terms:
            parts.append(f"(?:{_alternation(other_terms)})")
        return re.compile("|".join(parts))

    @property
    def attributes(self) -> tuple[str, ...]:
        """The attribute names, subject first."""
        return tuple(a for a in ATTRIBUTE_ORDER if a in self.vocabulary)

    def keys(self, attribute: str) -> tuple[str, ...]:
        """The value keys of ``attribute``."""
        return tuple(self.vocabulary[attribute])

    def canonical(self, attribute: str, key: str) -> str:
        """The English tag for a value (its first phrasing, the one the embedded model saw most)."""
        return self.vocabulary[attribute][key].en[0]

    def value_of(self, tag: str) -> tuple[str, str] | None:
        """``(attribute, key)`` when ``tag`` (weights stripped) is a vocabulary phrasing or synonym, else None."""
        info = self._values.get(normalise_text(parse_tag(tag).text))
        if info is None or info.attribute is None or info.key is None:
            return None
        return info.attribute, info.key

    def find_terms(self, text: str, *, values_only: bool = False) -> list[TermMatch]:
        """Every known term in ``normalise_text(text)``, left to right, non-overlapping, longest first.

        ``values_only`` ignores concepts (vague words) and finds vocabulary phrasings and synonyms only.
        """
        norm = normalise_text(text)
        pattern = self._value_pattern if values_only else self._all_pattern
        terms = self._values if values_only else self._terms
        matches = []
        for found in pattern.finditer(norm):
            info = terms[found.group(0)]
            negated = self._is_negated(norm[: found.start()])
            matches.append(TermMatch(found.start(), found.end(), found.group(0), info.attribute, info.key,
                                     info.concept, negated))
        return matches

    def _is_negated(self, before: str) -> bool:
        tail = before[-24:]
        if self._negation_en is not None and self._negation_en.search(tail):
            return True
        return self._negation_zh is not None and bool(self._negation_zh.search(tail))

    def attributes_in(self, prompt: str) -> dict[str, set[str]]:
        """Which attribute values ``prompt`` names (not negated), e.g. ``{"weather": {"rain"}}``."""
        text = re.sub(r":\s*[0-9.]+\s*\)", ")", prompt).replace("(", " ").replace(")", " ")
        found: dict[str, set[str]] = {}
        for match in self.find_terms(text, values_only=True):
            if match.attribute is not None and match.key is not None and not match.negated:
                found.setdefault(match.attribute, set()).add(match.key)
        return found

    def leftover_words(self, text: str, matches: Iterable[TermMatch]) -> list[str]:
        """English content words of ``normalise_text(text)`` outside ``matches`` and not stopwords, as phrases.

        Consecutive kept words stay together ("old lighthouse"); punctuation and stopwords split phrases.
        """
        norm = list(normalise_text(text))
        for match in matches:
            norm[match.start : match.end] = [","] * (match.end - match.start)
        phrases: list[str] = []
        current: list[str] = []
        for token in re.findall(r"[a-z][a-z'-]*|[^a-z\s]", "".join(norm)):
            if token[0].isalpha() and len(token) > 2 and token not in self.stopwords:
                current.append(token)
                continue
            if current:
                phrases.append(" ".join(current))
                current = []
        if current:
            phrases.append(" ".join(current))
        return list(dict.fromkeys(phrases))


@cache
def load_lexicon() -> Lexicon:
    """The shipped lexicon (parsed once); ConfigError naming the file and field when it is invalid."""
    resource = resources.files("imageloop").joinpath(LEXICON_RESOURCE)
    raw = resource.read_bytes()
    try:
        data = _LexiconFile.model_validate(yaml.safe_load(raw))
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"{LEXICON_RESOURCE}: invalid lexicon: {exc}") from exc
    unknown = sorted(set(data.synonyms) - set(data.vocabulary))
    if unknown:
        raise ConfigError(f"{LEXICON_RESOURCE}: synonyms for unknown attribute {unknown[0]!r}")
    for attribute, values in data.synonyms.items():
        missing = sorted(set(values) - set(data.vocabulary[attribute]))
        if missing:
            raise ConfigError(f"{LEXICON_RESOURCE}: synonyms for unknown value {attribute}.{missing[0]!r}")
    return Lexicon(data, hashlib.sha256(raw).hexdigest()[:8])

