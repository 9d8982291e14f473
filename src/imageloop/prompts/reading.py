"""Read an intent into English phrases and negated phrases, in any mix of English and Chinese.

The lexicon handles the words it knows (:meth:`Lexicon.find_terms`); this module reads everything else, so a word
the lexicon was never written for ("宇航员", "lighthouse", "水墨画") still reaches the prompt:

1. The text is normalised and split into clauses at punctuation and "but"/"但是".
2. A negation cue ("no", "without", "don't want", "不要", "别", "没有"...) makes the rest of its clause (in Chinese,
   up to the next 的) negated: those phrases go to the negative prompt.
3. Spans the lexicon matched are left to the lexicon (``covered``).
4. Latin runs are English: request filler and stopwords split them into phrases; typos are corrected
   (:func:`imageloop.prompts.words.correct_word`).
5. Han runs are segmented by jieba with parts of speech; particles, pronouns, numerals, adverbs and request verbs
   ("帮我画") go; each word is glossed by CC-CEDICT (:mod:`imageloop.prompts.dictionary`), unknown compounds by
   their longest known parts; modifiers join the noun they describe ("孤独的宇航员" → "lonely astronaut").
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from imageloop.prompts.dictionary import ChineseDictionary, load_dictionary
from imageloop.prompts.lexicon import Lexicon, TermMatch, normalise_text
from imageloop.prompts.words import correct_word

__all__ = ["IntentReading", "Phrase", "read_intent", "warm_up_reading"]

MAX_PHRASE_WORDS = 5
_CLAUSE = re.compile(r"[,.;:!?，。；：！？、\n()（）\[\]【】]+|\bbut\b|但是|不过")
_EN_NEGATION = re.compile(
    r"\b(?:no|not|without|never|avoid|minus|don'?t (?:want|need|include|add|show)|do not (?:want|need|include|add|show)"
    r"|nothing)\b"
)
_ZH_NEGATION = re.compile(r"不要|不想要|不需要|没有|别|不带|去掉|不含|无需")
_HAN_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_LATIN_RUN = re.compile(r"[a-z0-9][a-z0-9' -]*[a-z0-9]|[a-z0-9]")
# jieba part-of-speech tags of words that carry no picture: particles, prepositions, pronouns, numerals,
# measure words, conjunctions, adverbs, modal and exclamation words, punctuation, locatives.
_ZH_DROP_FLAGS = ("u", "p", "r", "m", "q", "c", "d", "y", "e", "o", "x", "f", "w")
_ZH_DROP_WORDS = frozenset((
    "帮", "帮我", "画", "画个", "画一", "想", "想要", "要", "来", "给", "给我",
    "生成", "做", "是", "有", "请", "能", "可以", "一下", "一张", "一幅", "一个",
    "一只", "图", "图片", "画面", "感觉", "风格", "那种", "这种", "样子", "效果",
    "东西", "氛围", "的话"
))
# Prepositions and filler the lexicon's stopwords leave out; they split phrases and are dropped.
_EN_STOPWORDS = frozenset((
    "during", "while", "through", "within", "around", "across", "along", "among", "toward", "towards", "near",
    "next", "beside", "behind", "onto", "upon", "amid", "amidst", "inside", "outside", "where", "which", "who",
    "whose", "what", "when", "how", "also", "maybe", "perhaps", "kinda", "sorta", "something", "someone",
    "somewhere", "everything", "lots"
))
_EN_FILLER = re.compile(
    r"^(?:(?:can|could|would) you(?: please)?|please|i(?:'d| would)? (?:want|like|need)(?: to see)?|i'd love|"
    r"make me|draw me|give me|show me|generate|create|draw|paint|render|make|imagine|picture of|image of)\b"
)


@dataclass(frozen=True, slots=True)
class Phrase:
    """An English phrase for the prompt and the words of the intent it came from."""

    text: str
    source: str
    translated: bool = False


@dataclass(frozen=True, slots=True)
class IntentReading:
    """What :func:`read_intent` found outside the lexicon's terms."""

    phrases: tuple[Phrase, ...] = ()
    negatives: tuple[Phrase, ...] = ()
    untranslated: tuple[str, ...] = ()
    corrections: dict[str, str] = field(default_factory=dict)

    @property
    def english(self) -> str:
        """The phrases as one English line (what the LLM strategies are given)."""
        return ", ".join(p.text for p in self.phrases)


@cache
def _jieba() -> Any:
    import jieba
    import jieba.posseg

    jieba.setLogLevel(60)  # its start-up chatter goes to stderr otherwise
    for word in load_dictionary().image_terms:
        jieba.add_word(word, freq=2000, tag="n")
    return jieba.posseg


_JIEBA_LOCK = threading.Lock()


def warm_up_reading() -> None:
    """Load the segmenter, the dictionary and the word list now (start-up) instead of on the first intent."""
    with _JIEBA_LOCK:
        list(_jieba().cut("雨夜"))
    correct_word("warmup")


def _segments(text: str) -> list[tuple[str, str]]:
    with _JIEBA_LOCK:  # jieba's lazy initialisation is not thread-safe
        return [(pair.word, pair.flag) for pair in _jieba().cut(text)]


def _gloss_compound(word: str, dictionary: ChineseDictionary, *, verb: bool = False) -> str | None:
    """Gloss of ``word``, or of its longest known parts left to right ("窗台上" → "windowsill")."""
    whole = dictionary.gloss(word, verb=verb)
    if whole is not None:
        return whole
    parts: list[str] = []
    start = 0
    while start < len(word):
        for end in range(len(word), start, -1):
            piece = word[start:end]
            gloss = dictionary.gloss(piece) if (end - start > 1 or piece not in "上下里中外边旁前后") else None
            if gloss is not None:
                parts.append(gloss)
                start = end
                break
        else:
            start += 1
    return " ".join(parts) if parts else None


def _is_modifier(flag: str, word: str) -> bool:
    return flag.startswith("a") or (len(word) == 1 and word in "小大老新旧红白黑蓝绿黄金银")


def _read_han(text: str, dictionary: ChineseDictionary, untranslated: list[str]) -> list[Phrase]:
    phrases: list[Phrase] = []
    pending: list[tuple[str, str]] = []  # modifiers waiting for their noun (English order: modifier first)
    for word, flag in _segments(text):
        if word in ("的", "之") and pending:
            continue  # "孤独的宇航员": the modifier stays pending across 的
        if flag.startswith(_ZH_DROP_FLAGS) or word in _ZH_DROP_WORDS:
            if pending:
                phrases.append(Phrase(" ".join(g for g, _ in pending), "".join(w for _, w in pending), True))
                pending = []
            continue
        gloss = word if flag == "eng" else _gloss_compound(word, dictionary, verb=flag.startswith("v"))
        if gloss is None:
            untranslated.append(word)
            continue
        if _is_modifier(flag, word):
            pending.append((gloss, word))
            continue
        words = [g for g, _ in pending] + [gloss]
        phrases.append(Phrase(" ".join(words)[:80], "".join(w for _, w in pending) + word, True))
        pending = []
    if pending:
        phrases.append(Phrase(" ".join(g for g, _ in pending), "".join(w for _, w in pending), True))
    return phrases


def _read_latin(text: str, stopwords: frozenset[str], corrections: dict[str, str]) -> list[Phrase]:
    text = _EN_FILLER.sub(" ", text.strip()).strip()
    phrases: list[Phrase] = []
    current: list[str] = []
    for token in re.findall(r"[a-z0-9][a-z0-9'-]*", text):
        if token in stopwords or token in _EN_STOPWORDS or token in {"i", "a"}:
            if current:
                phrases.append(Phrase(" ".join(current), " ".join(current)))
                current = []
            continue
        fixed = correct_word(token)
        if fixed != token:
            corrections[token] = fixed
        current.append(fixed)
        if len(current) >= MAX_PHRASE_WORDS:
            phrases.append(Phrase(" ".join(current), " ".join(current)))
            current = []
    if current:
        phrases.append(Phrase(" ".join(current), " ".join(current)))
    return phrases


def _uncovered(text: str, start: int, covered: Sequence[TermMatch]) -> str:
    """``text`` (which starts at ``start`` in the normalised intent) with the lexicon's matches blanked out."""
    chars = list(text)
    for match in covered:
        for i in range(max(match.start, start), min(match.end, start + len(text))):
            chars[i - start] = ","
    return "".join(chars)


def _read_span(text: str, lexicon: Lexicon, dictionary: ChineseDictionary, untranslated: list[str],
               corrections: dict[str, str]) -> list[Phrase]:
    phrases: list[Phrase] = []
    for piece in re.split(r",+", text):
        position = 0
        for han in _HAN_RUN.finditer(piece):
            phrases += _read_latin(piece[position : han.start()], lexicon.stopwords, corrections)
            phrases += _read_han(han.group(0), dictionary, untranslated)
            position = han.end()
        phrases += _read_latin(piece[position:], lexicon.stopwords, corrections)
    return phrases


def _negation_split(clause: str) -> tuple[str, str]:
    """``clause`` split into what is wanted and what is negated (the text after a negation cue)."""
    cues = [m for m in (_EN_NEGATION.search(clause), _ZH_NEGATION.search(clause)) if m is not None]
    if not cues:
        return clause, ""
    cue = min(cues, key=lambda m: m.start())
    negated = clause[cue.end() :]
    wanted = clause[: cue.start()]
    if _HAN_RUN.match(cue.group(0)) and "的" in negated:  # "没有人的街道": only 人 is negated
        negated, rest = negated.split("的", 1)
        wanted += "," + rest
    return wanted, negated


def read_intent(intent: str, lexicon: Lexicon, covered: Iterable[TermMatch] = ()) -> IntentReading:
    """The English phrases and negated phrases of ``intent`` outside the lexicon's ``covered`` matches (pure, apart
    from loading the segmenter and dictionary once)."""
    norm = normalise_text(intent)
    matches = sorted(covered, key=lambda m: m.start)
    dictionary = load_dictionary()
    wanted: list[Phrase] = []
    negated: list[Phrase] = []
    untranslated: list[str] = []
    corrections: dict[str, str] = {}
    position = 0
    for boundary in [*_CLAUSE.finditer(norm), None]:
        end = boundary.start() if boundary is not None else len(norm)
        clause = _uncovered(norm[position:end], position, matches)
        positive, negative = _negation_split(clause)
        wanted += _read_span(positive, lexicon, dictionary, untranslated, corrections)
        negated += _read_span(negative, lexicon, dictionary, untranslated, corrections)
        position = boundary.end() if boundary is not None else end
    negative_texts = {p.text for p in negated}
    unique = [p for p in {p.text: p for p in wanted}.values() if p.text not in negative_texts]
    return IntentReading(
        phrases=tuple(unique),
        negatives=tuple({p.text: p for p in negated}.values()),
        untranslated=tuple(dict.fromkeys(untranslated)),
        corrections=corrections,
    )
