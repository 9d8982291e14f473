"""Chinese word segmentation: jieba with parts of speech, told the words of the dictionaries it glosses with.

jieba's own dictionary comes from general text; a word CC-CEDICT has and jieba lacks ("极简主义") would be cut into
pieces that each gloss to something else ("extremely", "simple", "doctrine"). Every such CC-CEDICT headword of
two to four Chinese characters is added (none that starts with a numeral or ends on a particle) with the frequency
jieba would need to keep it whole when it stands alone (one more than its best split into pieces jieba knows, as
``jieba.suggest_freq`` prices it), and the image terms of ``data/zh_image_terms.yaml`` with a high one. Reading and
moderation cut with this one tokenizer (jieba's shared one), so word boundaries never depend on which ran first.
jieba is not thread-safe while it builds its tables, so every cut holds one lock.
"""

from __future__ import annotations

import re
import threading
from functools import cache
from typing import Any

from imageloop.prompts.dictionary import cedict_senses, load_dictionary

__all__ = ["segments", "warm_up_segmenter", "words"]

_HAN_WORD = re.compile(r"[\u4e00-\u9fff]{2,4}")
_IMAGE_TERM_FREQ = 2000
_NO_START = ("m", "q", "u", "p", "c", "r")  # jieba tags of a character no added word may start with
_NO_END = ("u", "p", "c", "f", "y", "r")
_LOCK = threading.Lock()


def _kept_whole_freq(word: str, freq: dict[str, int], total: int) -> int:
    """The smallest frequency at which jieba's best path keeps ``word`` whole when it stands alone: one more than
    the best split's probability scaled back to a count (jieba's own scoring: an unknown piece counts once)."""
    best = [1.0] + [0.0] * len(word)
    for end in range(1, len(word) + 1):
        for start in range(end):
            if end - start == len(word):
                continue  # the whole word is what is being priced
            piece = word[start:end]
            count = freq.get(piece, 0) if end - start > 1 else max(freq.get(piece, 0), 1)
            if count > 0:
                best[end] = max(best[end], best[start] * count / total)
    return int(best[-1] * total) + 1


@cache
def _posseg() -> Any:
    import jieba
    import jieba.posseg

    jieba.setLogLevel(60)  # its start-up chatter goes to stderr otherwise
    jieba.initialize()
    tokenizer = jieba.dt
    freq: dict[str, int] = tokenizer.FREQ
    total = tokenizer.total
    tags: dict[str, str] = jieba.posseg.dt.word_tag_tab
    for word in cedict_senses():
        # A prefix of a jieba word is listed at 0. A word that starts with a numeral or ends on a particle or
        # locative ("一个人", "中的") would swallow the grammar the reading needs.
        if (freq.get(word) or not _HAN_WORD.fullmatch(word) or tags.get(word[0], "").startswith(_NO_START)
                or tags.get(word[-1], "").startswith(_NO_END)):
            continue
        jieba.add_word(word, freq=_kept_whole_freq(word, freq, total), tag="n")
    for word in load_dictionary().image_terms:
        # A noun, unless jieba knows it as an adjective or verb ("模糊" describes the noun after it); its other tags
        # are wrong for the picture words kept here ("少年" is tagged a numeral).
        tag = tags.get(word, "n")
        jieba.add_word(word, freq=_IMAGE_TERM_FREQ, tag=tag if tag.startswith(("a", "v")) else "n")
    return jieba.posseg


def segments(text: str) -> list[tuple[str, str]]:
    """jieba's (word, part-of-speech flag) pairs of ``text``, in order; they join back into ``text``."""
    with _LOCK:  # jieba's lazy initialisation is not thread-safe
        return [(pair.word, pair.flag) for pair in _posseg().cut(text)]


def words(text: str) -> list[str]:
    """The words of ``text`` by the same dictionary, without parts of speech or guessed new words (HMM off): what
    moderation reads word boundaries from."""
    import jieba

    with _LOCK:
        _posseg()  # the shared tokenizer has the dictionary's words before any cut, whoever cuts first
        return list(jieba.lcut(text, HMM=False))


def warm_up_segmenter() -> None:
    """Build the segmenter's tables now (start-up) instead of on the first intent."""
    segments("雨夜")
