"""Which language an intent is written in: ``"zh"`` when it has Chinese characters, else ``"en"``.

Only the two languages the expander handles are told apart; the record keeps the answer (``intent_language``).
A caller-given BCP 47 tag wins over detection (``zh-Hant`` → ``zh``, ``en-GB`` → ``en``).
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = ["SUPPORTED_LANGUAGES", "Language", "detect_language", "resolve_language"]

Language = Literal["en", "zh"]
SUPPORTED_LANGUAGES: tuple[Language, ...] = ("en", "zh")
# CJK Unified Ideographs, extension A and the compatibility block.
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-z]{2,}")


def detect_language(text: str) -> Language:
    """``"zh"`` when Han characters carry at least a third of the text's words, else ``"en"``.

    A Han character counts as one word (Chinese is not space-separated), a Latin run of 2+ letters as one, so
    "emo一点的感觉" is Chinese and "a photo of 城堡 castle at night" is English.
    """
    han = len(_HAN.findall(text))
    latin = len(_LATIN_WORD.findall(text))
    if han == 0:
        return "en"
    return "zh" if han * 1.0 >= (han + latin) / 3 else "en"


def resolve_language(text: str, given: str | None) -> Language:
    """The caller's language tag when it names a supported language, else :func:`detect_language`."""
    if given:
        primary = given.strip().lower().replace("_", "-").split("-")[0]
        if primary in SUPPORTED_LANGUAGES:
            return "zh" if primary == "zh" else "en"
    return detect_language(text)
