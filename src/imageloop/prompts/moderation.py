"""Text moderation for intents and prompts, English and Chinese: normalised blocklists, extensible from settings.

Normalisation defeats the usual dodges before matching: full-width characters and case are folded (NFKC +
casefold); format characters (soft hyphen, zero-width joiners, bidi marks: Unicode category Cf) and invisible fillers
are dropped; combining accents are removed ("nüde"); letters that imitate Latin ones (Cyrillic "о", Greek "ν") are
read as the Latin letter through the Unicode confusables table shipped by ``confusable-homoglyphs``; leetspeak is
read as letters (``p0rn``, ``n@ked``, ``$ex``); letters spaced or dotted apart are joined (``p o r n``,
``n.u.d.e``); traditional Chinese is folded to simplified (OpenCC's t2s, from ``opencc-python-reimplemented``) and
Chinese characters separated by spaces, symbols or CJK punctuation are joined (``色 情``, ``色。情``).

English terms match whole words (so "Essex" and "class" pass). Chinese terms match as substrings that do not cut a
word of the segmented text in two: "金色情侣" (a golden couple) is 金色/情侣 and does not read as 色情. A category may
also list ``patterns`` (regular expressions, e.g. ages under 18). A *combination* category blocks only when every one
of its groups matches (a minor AND sexual content). :meth:`TextModerator.check` raises
:class:`~imageloop.errors.ModerationError` with the category; the API answers 400 and nothing is stored.
Negative prompts are not checked: "nsfw, nude" there asks for less, not more.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from imageloop.errors import ConfigError, ModerationError
from imageloop.prompts.segment import words as segment_words

__all__ = ["ModerationVerdict", "TextModerator", "moderation_variants", "normalise_for_moderation"]

MODERATION_RESOURCE = "data/moderation.yaml"
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i",
                       "|": "i", "+": "t", "€": "e"})
_HAN = r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"
# A number with a unit stays a number ("4k", "3d", "10yo", "15-year-old"); "5ex" is still read as leetspeak.
_UNITS = ("yo|y/o|yrs?|years?|old|months?|days?|weeks?|k|px|p|fps|s|th|st|nd|rd|d|x|mm|cm|m|km|kg|h|hrs?|min|am|pm|"
          "gb|mb|in|ft|inch|mp|mph|ml|l")
_NUMBER_WITH_UNIT = re.compile(rf"\d+(?:[.,]\d+)?(?:[-/]?(?:{_UNITS}))+")
# Invisible letters (category Lo, not Cf) that render as blanks: Hangul fillers, the braille blank.
_INVISIBLE = dict.fromkeys(map(ord, "\u115f\u1160\u3164\uffa0\u2800"), None)
# Scripts whose characters are never read as Latin look-alikes (Chinese, Japanese, Korean and CJK punctuation).
_NOT_CONFUSABLE = re.compile(r"[\u1100-\u11ff\u2e80-\u303f\u3040-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")
_MESSAGES = {
    "sexual": "sexual content is not allowed",
    "sexual_minors": "sexual content involving minors is never allowed",
    "violence": "graphic violence and gore are not allowed",
    "hate": "hateful content is not allowed",
    "extremism": "extremist or terrorist content is not allowed",
    "self_harm": "content that promotes self-harm is not allowed",
}


class _Terms(BaseModel):
    model_config = ConfigDict(extra="forbid")

    en: list[str] = Field(default_factory=list)
    zh: list[str] = Field(default_factory=list)
    patterns: list[str] = Field(default_factory=list)


class _ModerationFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int
    categories: dict[str, _Terms]
    combinations: dict[str, list[_Terms]] = Field(default_factory=dict)
    benign: list[str] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ModerationVerdict:
    """``category`` is None when the text passes; ``term`` is the normalised term that matched."""

    category: str | None
    term: str | None = None

    @property
    def allowed(self) -> bool:
        return self.category is None


@cache
def _confusables() -> dict[int, str]:
    """Each non-Latin character that the Unicode confusables table (via ``confusable-homoglyphs``) lists as a
    look-alike of a Latin letter or digit, mapped to that letter (lower case; letters preferred over digits)."""
    raw = resources.files("confusable_homoglyphs").joinpath("confusables.json").read_text(encoding="utf-8")
    table: dict[int, str] = {}
    for char, homoglyphs in json.loads(raw).items():
        if len(char) != 1 or char.isascii() or _NOT_CONFUSABLE.match(char):
            continue
        latin = [h["c"] for h in homoglyphs if len(h["c"]) == 1 and h["c"].isascii() and h["c"].isalnum()]
        if latin:
            table[ord(char)] = sorted(latin, key=lambda c: c.isdigit())[0].lower()
    return table


@cache
def _to_simplified() -> Callable[[str], str]:
    from opencc import OpenCC  # pure Python, no type hints

    converter: Any = OpenCC("t2s")
    return lambda text: str(converter.convert(text))


def _fold_characters(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = "".join(c for c in text if unicodedata.category(c) != "Cf").translate(_INVISIBLE)
    # Combining accents ("nüde", "p̷o̷r̷n") go; NFC puts back what decomposition split (Hangul syllables).
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    text = unicodedata.normalize("NFC", text).translate(_confusables()).casefold()
    if re.search(_HAN, text):
        text = _to_simplified()(text)
    return text


def _leet_word(word: str) -> str:
    # Only words that mix letters with digits/symbols are read as leetspeak: "2024", "4k" and "10yo" stay numbers.
    if re.search(r"[a-z]", word) and re.search(r"[0-9@$!|+€]", word) and not _NUMBER_WITH_UNIT.fullmatch(word):
        return word.translate(_LEET)
    return word


_SPACED = re.compile(r"\b(?:[a-z][\s._\-*]+){2,}[a-z]\b")
_SPACED_AFTER_WORD = re.compile(r"\b([ai])\s+((?:[a-z][\s._\-*]+){2,}[a-z])\b")
# A term right after a negation is not asked for ("不要血腥", "no gore", "without nudity"): it is not counted.
_NEGATED = re.compile(r"(?:(?<![a-z])(?:no|not|without|never|avoid|avoiding|excluding|free of|zero)\s+(?:any\s+)?"
                      r"|(?:不要|不想要|不想看到|没有|不含|不带|避免|别有|别|无)\s*)$")


def _negated(text: str, start: int) -> bool:
    """Whether a negation ends right before ``start`` (only the few characters before it are read)."""
    return _NEGATED.search(text, max(0, start - 24), start) is not None


# Anything but a letter or digit between two Chinese characters: spaces, symbols, CJK punctuation ("色。情").
_HAN_GAP = re.compile(rf"(?<={_HAN})[^\w]+(?={_HAN})")


def _join(run: str) -> str:
    return re.sub(r"[\s._\-*]+", "", run)


def normalise_for_moderation(text: str) -> str:
    """The text as the blocklists see it (see the module docstring)."""
    text = _fold_characters(text)
    text = " ".join(_leet_word(word) for word in text.split())
    # Single letters split by spaces/dots/dashes/underscores ("p o r n", "n.u.d.e") become one word.
    text = _SPACED.sub(lambda m: _join(m.group(0)), text)
    text = _HAN_GAP.sub("", text)
    return re.sub(r"\s+", " ", text).strip()


def moderation_variants(text: str) -> list[str]:
    """The normalised text, plus a reading that keeps a leading "a"/"i" apart ("a p o r n" = "a porn")."""
    norm = normalise_for_moderation(text)
    raw = _fold_characters(text)
    if _SPACED_AFTER_WORD.search(raw):
        alternative = _SPACED_AFTER_WORD.sub(lambda m: f"{m.group(1)} {_join(m.group(2))}", raw)
        return [norm, normalise_for_moderation(alternative)]
    return [norm]


class _NormalisedText:
    """One normalised variant of a text, with its Chinese word boundaries worked out on first need."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._bounds: frozenset[int] | None = None

    def cuts_a_word(self, start: int, end: int) -> bool:
        """Whether text[start:end] starts or ends inside a word while spanning a word boundary ("金色|情侣")."""
        if self._bounds is None:
            bounds, at = {0}, 0
            for word in segment_words(self.text):
                at += len(word)
                bounds.add(at)
            self._bounds = frozenset(bounds)
        crosses = any(b in self._bounds for b in range(start + 1, end))
        return crosses and not (start in self._bounds and end in self._bounds)


class _Matcher:
    """The terms of one category or group: English as whole words, Chinese as substrings, plus regex patterns; a
    term right after a negation does not count."""

    def __init__(self, terms: Sequence[str], patterns: Sequence[str] = ()) -> None:
        words = sorted({normalise_for_moderation(t) for t in terms if t.strip()}, key=len, reverse=True)
        ascii_words = [re.escape(w) for w in words if w.isascii()]
        self._words = (re.compile(rf"(?<![a-z0-9])(?:{'|'.join(ascii_words)})(?![a-z0-9])") if ascii_words
                       else None)
        self._chinese = tuple(w for w in words if not w.isascii())
        try:
            self._patterns = tuple(re.compile(p) for p in patterns)
        except re.error as exc:
            raise ConfigError(f"moderation pattern {exc.pattern!r}: {exc}") from exc

    def __bool__(self) -> bool:
        return bool(self._words or self._chinese or self._patterns)

    def search(self, norm: _NormalisedText) -> str | None:
        """The first term found in ``norm``, or None."""
        text = norm.text
        for pattern in (self._words, *self._patterns):
            for match in pattern.finditer(text) if pattern is not None else ():
                if not _negated(text, match.start()):
                    return match.group(0)
        for term in self._chinese:
            at = text.find(term)
            while at >= 0:
                if not norm.cuts_a_word(at, at + len(term)) and not _negated(text, at):
                    return term
                at = text.find(term, at + 1)
        return None


@cache
def _shipped() -> _ModerationFile:
    raw = resources.files("imageloop").joinpath(MODERATION_RESOURCE).read_bytes()
    try:
        return _ModerationFile.model_validate(yaml.safe_load(raw))
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"{MODERATION_RESOURCE}: invalid blocklist: {exc}") from exc


class TextModerator:
    """The shipped blocklists plus ``extra_terms`` (category → terms, from ``prompts.moderation_extra_terms``)."""

    def __init__(self, extra_terms: Mapping[str, Sequence[str]] | None = None, *, enabled: bool = True) -> None:
        data = _shipped()
        self.enabled = enabled
        terms: dict[str, list[str]] = {name: [*t.en, *t.zh] for name, t in data.categories.items()}
        for category, extra in (extra_terms or {}).items():
            terms.setdefault(category, []).extend(extra)
        patterns = {name: t.patterns for name, t in data.categories.items()}
        self._categories = {name: m for name, words in terms.items()
                            if (m := _Matcher(words, patterns.get(name, [])))}
        self._combinations = {
            name: [m for g in groups if (m := _Matcher([*g.en, *g.zh], g.patterns))]
            for name, groups in data.combinations.items()
        }
        phrases = sorted({normalise_for_moderation(p) for p in data.benign if p.strip()}, key=len, reverse=True)
        self._benign = (re.compile(rf"(?<![a-z0-9])(?:{'|'.join(re.escape(p) for p in phrases)})(?![a-z0-9])")
                        if phrases else None)

    def _unmasked(self, text: str) -> str:
        """``text`` with each benign phrase ("naked eye") blanked, so its words do not count as terms."""
        return self._benign.sub(lambda m: " " * len(m.group(0)), text) if self._benign is not None else text

    @property
    def categories(self) -> tuple[str, ...]:
        """Every category that can block a text."""
        return tuple(sorted({*self._categories, *self._combinations}))

    def verdict(self, text: str | None) -> ModerationVerdict:
        """What moderation says about ``text`` (combinations first: they are the most serious)."""
        if not self.enabled or not text or not text.strip():
            return ModerationVerdict(None)
        variants = [_NormalisedText(self._unmasked(v)) for v in moderation_variants(text)]
        for name, groups in self._combinations.items():
            for norm in variants:
                found = [g.search(norm) for g in groups]
                if groups and all(found):
                    return ModerationVerdict(name, " + ".join(term for term in found if term))
        for name, matcher in self._categories.items():
            for norm in variants:
                if term := matcher.search(norm):
                    return ModerationVerdict(name, term)
        return ModerationVerdict(None)

    def check(self, text: str | None, *, field: str = "intent") -> None:
        """Raise ModerationError(category, message naming ``field``) when ``text`` is blocked."""
        verdict = self.verdict(text)
        if verdict.category is not None:
            reason = _MESSAGES.get(verdict.category, f"content in the {verdict.category!r} category is not allowed")
            raise ModerationError(verdict.category, f"{field}: {reason}")
