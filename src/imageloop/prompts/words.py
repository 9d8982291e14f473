"""English words: is this a real word, and what did a typo mean ("sleepin" → "sleeping").

Both read ``wordfreq``'s English frequency list (Zipf scale: 7 = "the", 3 = once per million words, 0 = unseen).
A word is real at Zipf ≥ :data:`MIN_ZIPF` or when it is a number or a lens figure ("85mm", "35mm"). A typo is
corrected to the most frequent real word one edit away when the word itself is unseen, or split into the two common
words it runs together ("lowpoly").
"""

from __future__ import annotations

import re
import string
from functools import cache

__all__ = ["MIN_ZIPF", "correct_word", "is_real_word", "unreal_words"]

MIN_ZIPF = 1.5
RARE_ZIPF = 2.6  # below this a real word may still be a typo of a much more common one
TYPO_MARGIN = 1.5
_FIGURE = re.compile(r"^\d+(?:\.\d+)?(?:mm|k|px|s|x|d|th|st|nd|rd)?$")
_LETTERS = string.ascii_lowercase


@cache
def _zipf(word: str) -> float:
    from wordfreq import zipf_frequency

    return float(zipf_frequency(word, "en"))


def is_real_word(word: str) -> bool:
    """True for an English word wordfreq has seen often enough, a hyphenated pair of such words, or a figure."""
    word = word.lower().strip("'")
    if not word or _FIGURE.match(word):
        return True
    if "-" in word:
        return all(is_real_word(part) for part in word.split("-") if part)
    return _zipf(word) >= MIN_ZIPF


def unreal_words(text: str) -> list[str]:
    """The words of ``text`` (a prompt or tag) that are not real English words, in order."""
    words = re.findall(r"[a-z0-9][a-z0-9'-]*", text.lower())
    return [w for w in dict.fromkeys(words) if not is_real_word(w)]


def _edits1(word: str) -> set[str]:
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    deletes = {a + b[1:] for a, b in splits if b}
    swaps = {a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}
    replaces = {a + c + b[1:] for a, b in splits if b for c in _LETTERS}
    inserts = {a + c + b for a, b in splits for c in _LETTERS}
    return deletes | swaps | replaces | inserts


def _split_compound(word: str) -> str | None:
    # "lowpoly" → "low poly": two common words run together.
    splits = [(word[:i], word[i:]) for i in range(2, len(word) - 1)]
    found = [(min(_zipf(a), _zipf(b)), f"{a} {b}") for a, b in splits if _zipf(a) >= 3.0 and _zipf(b) >= 2.0]
    return max(found)[1] if found else None


@cache
def correct_word(word: str) -> str:
    """``word`` when it is real (or too short to guess), else the most frequent real word one edit away, else two
    common words run together split apart, else ``word`` unchanged. A rare real word (Zipf < :data:`RARE_ZIPF`)
    becomes a word one edit away with the same first letter that is :data:`TYPO_MARGIN` more common."""
    lower = word.lower()
    if len(lower) < 4 or not lower.isalpha():
        return word
    if is_real_word(lower):
        # A dropped g is a typo ("sittin"); so is a rare spelling next to a far more common word ("sleepin",
        # "beatiful"). Real picture words of middling frequency stay: otter, heron, harp, leash, stormy, earthy.
        if lower.endswith("in") and _zipf(lower + "g") >= _zipf(lower) + TYPO_MARGIN:
            return lower + "g"
        if _zipf(lower) >= RARE_ZIPF:
            return word
        near = [w for w in _edits1(lower) if _zipf(w) >= _zipf(lower) + TYPO_MARGIN and w[0] == lower[0]]
        return max(near, key=lambda w: (_zipf(w), w)) if near else word
    near = [w for w in _edits1(lower) if _zipf(w) >= MIN_ZIPF + 0.5]
    if near:
        return max(near, key=lambda w: (_zipf(w), w))
    return _split_compound(lower) or word
