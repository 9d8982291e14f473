"""Text moderation for intents and prompts, English and Chinese: normalised blocklists, extensible from settings.

Normalisation defeats the usual dodges before matching: full-width characters and case are folded (NFKC +
casefold), leetspeak is read as letters (``p0rn``, ``n@ked``, ``$ex``), letters spaced or dotted apart are joined
(``p o r n``, ``n.u.d.e``) and Chinese characters separated by spaces or symbols are joined (``色 情``). English
terms match whole words (so "Essex" and "class" pass), Chinese terms as substrings. A *combination* category blocks
only when every one of its groups matches (a minor AND sexual content). :meth:`TextModerator.check` raises
:class:`~imageloop.errors.ModerationError` with the category; the API answers 400 and nothing is stored.
Negative prompts are not checked: "nsfw, nude" there asks for less, not more.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from imageloop.errors import ConfigError, ModerationError

__all__ = ["ModerationVerdict", "TextModerator", "moderation_variants", "normalise_for_moderation"]

MODERATION_RESOURCE = "data/moderation.yaml"
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i",
                       "|": "i", "+": "t", "€": "e"})
_HAN = r"[\u3400-\u4dbf\u4e00-\u9fff]"
_MESSAGES = {
    "sexual": "sexual content is not allowed",
    "sexual_minors": "sexual content involving minors is never allowed",
    "violence": "graphic violence and gore are not allowed",
    "hate": "hateful content is not allowed",
    "self_harm": "content that promotes self-harm is not allowed",
}


class _Terms(BaseModel):
    model_config = ConfigDict(extra="forbid")

    en: list[str] = Field(default_factory=list)
    zh: list[str] = Field(default_factory=list)


class _ModerationFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int
    categories: dict[str, _Terms]
    combinations: dict[str, list[_Terms]] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ModerationVerdict:
    """``category`` is None when the text passes; ``term`` is the normalised term that matched."""

    category: str | None
    term: str | None = None

    @property
    def allowed(self) -> bool:
        return self.category is None


def _leet_word(word: str) -> str:
    # Only words that mix letters with digits/symbols are read as leetspeak: "2024" and "4k" stay numbers.
    if re.search(r"[a-z]", word) and re.search(r"[0-9@$!|+€]", word) and not re.fullmatch(r"\d+(?:k|px|yo|s)", word):
        return word.translate(_LEET)
    return word


_SPACED = re.compile(r"\b(?:[a-z][\s._\-*]+){2,}[a-z]\b")
_SPACED_AFTER_WORD = re.compile(r"\b([ai])\s+((?:[a-z][\s._\-*]+){2,}[a-z])\b")


def _join(run: str) -> str:
    return re.sub(r"[\s._\-*]+", "", run)


def normalise_for_moderation(text: str) -> str:
    """The text as the blocklists see it (see the module docstring)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = re.sub(r"[\u200b-\u200f\u2060\ufeff]", "", text)  # zero-width characters hide nothing
    text = " ".join(_leet_word(word) for word in text.split())
    # Single letters split by spaces/dots/dashes/underscores ("p o r n", "n.u.d.e") become one word.
    text = _SPACED.sub(lambda m: _join(m.group(0)), text)
    # Chinese characters split by spaces or symbols ("色 情", "色*情") are joined.
    text = re.sub(rf"(?<={_HAN})[\s._\-*·]+(?={_HAN})", "", text)
    return re.sub(r"\s+", " ", text).strip()


def moderation_variants(text: str) -> list[str]:
    """The normalised text, plus a reading that keeps a leading "a"/"i" apart ("a p o r n" = "a porn")."""
    norm = normalise_for_moderation(text)
    raw = unicodedata.normalize("NFKC", text).casefold()
    if _SPACED_AFTER_WORD.search(raw):
        alternative = _SPACED_AFTER_WORD.sub(lambda m: f"{m.group(1)} {_join(m.group(2))}", raw)
        return [norm, normalise_for_moderation(alternative)]
    return [norm]


def _pattern(terms: Sequence[str]) -> re.Pattern[str] | None:
    words = sorted({normalise_for_moderation(t) for t in terms if t.strip()}, key=len, reverse=True)
    if not words:
        return None
    ascii_words = [re.escape(w) for w in words if w.isascii()]
    other = [re.escape(w) for w in words if not w.isascii()]
    parts = []
    if ascii_words:
        parts.append(rf"(?<![a-z0-9])(?:{'|'.join(ascii_words)})(?![a-z0-9])")
    if other:
        parts.append(f"(?:{'|'.join(other)})")
    return re.compile("|".join(parts))


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
        self._categories = {name: p for name, words in terms.items() if (p := _pattern(words)) is not None}
        self._combinations = {
            name: [p for g in groups if (p := _pattern([*g.en, *g.zh])) is not None]
            for name, groups in data.combinations.items()
        }

    @property
    def categories(self) -> tuple[str, ...]:
        """Every category that can block a text."""
        return tuple(sorted({*self._categories, *self._combinations}))

    def verdict(self, text: str | None) -> ModerationVerdict:
        """What moderation says about ``text`` (combinations first: they are the most serious)."""
        if not self.enabled or not text or not text.strip():
            return ModerationVerdict(None)
        variants = moderation_variants(text)
        for name, groups in self._combinations.items():
            for norm in variants:
                found = [g.search(norm) for g in groups]
                if groups and all(found):
                    return ModerationVerdict(name, " + ".join(m.group(0) for m in found if m))
        for name, pattern in self._categories.items():
            for norm in variants:
                match = pattern.search(norm)
                if match:
                    return ModerationVerdict(name, match.group(0))
        return ModerationVerdict(None)

    def check(self, text: str | None, *, field: str = "intent") -> None:
        """Raise ModerationError(category, message naming ``field``) when ``text`` is blocked."""
        verdict = self.verdict(text)
        if verdict.category is not None:
            reason = _MESSAGES.get(verdict.category, f"content in the {verdict.category!r} category is not allowed")
            raise ModerationError(verdict.category, f"{field}: {reason}")
