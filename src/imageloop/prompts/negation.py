"""Which part of a clause a negation reaches ("no rain", "不要有人", "没有任何文字和水印的壁纸").

English: a cue ("no", "without", "don't want"...) negates what follows, up to a preposition ("no text on the
bottle": the bottle is wanted) or a contrast word ("no lamp, just candles").

Chinese: a cue counts only where it stands as a word of its own, by the segmenter: 别 negates in "别打伞" but not in
"特别" or "别墅", 没 not in "淹没". A cue fused with what it negates ("无人", "无云") counts when the word is unknown to
the dictionary or glossed as a negation ("uninhabited"). What follows a cue is negated up to a word that turns to
what is wanted instead ("不要白天而是黄昏") and up to 的 after a thing ("没有人的街道": only 人), not after an
adjective or a quantifier ("不要模糊的背景" negates the blurry background); a cue with nothing after it negates what
came before it ("一个人都没有", "文字不要"). Items listed after one cue ("不要文字、水印和logo") are all negated.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["NegationSplit", "negation_split", "strip_cues"]

NegationSplit = tuple[tuple[int, int], list[tuple[int, int]]]

EN_NEGATION = re.compile(
    r"\b(?:no|not|without|never|avoid|avoiding|minus|exclude|excluding|free of|none of|zero|leave out|get rid of|"
    r"remove|"
    r"(?:don'?t|do not|doesn'?t|does not) (?:want|need|include|add|show|have|put|use|draw|make|render|give)"
    r"(?: (?:it|them|this|that|the image|the picture))?|nothing)\b"
)
# Longest first, so "不想要" is read before "不要" would leave a stray "想".
ZH_NEGATION = re.compile(
    r"不希望有|不想看到|不要出现|不能出现|不可以有|不应该有|别出现|请勿出现|不想要|不需要|不希望|不要有|不能有|不想有|不应有|"
    r"不出现|千万别|不要|不是|没有|不带|不戴|不穿|不拿|去掉|去除|删掉|删除|移除|拿掉|除去|排除|不含|无需|不加|不用|避免|避开|禁止|拒绝|"
    r"请勿|切勿|不准|不许|别|没|无|勿"
)
# In English a negation reaches up to a preposition or a contrast word.
_EN_NEGATION_END = re.compile(r"\b(?:on|in|at|by|under|over|near|behind|from|for|inside|against|just|only|"
                              r"instead|rather|but|with)\b")
# Before 的, a thing ("没有人的街道": a street without people; "不要文字的海报": a poster without text) ends the
# negation; a quantifier or an adjective ("没有任何的文字", "不要模糊的背景") describes the negated noun after it.
_DESCRIBING_FLAGS = ("r", "m", "q", "b", "d", "a", "z")
# Chinese words after which what follows is wanted again (的 only after a thing).
_ZH_NEGATION_END = frozenset(("的", "而是", "而", "只要", "只有", "只", "就要", "但", "却", "换成", "改成", "要"))
_HAN = re.compile(r"[\u4e00-\u9fff]")
_FUSED_CUES = frozenset("无没别勿")
_NEGATING_GLOSS = re.compile(r"^(?:no |not |without |un|non-?)")


def _chinese_cues(clause: str, segments: Callable[[str], list[tuple[str, str]]],
                  gloss: Callable[[str], str | None]) -> list[re.Match[str]]:
    """The Chinese cues of ``clause`` that stand as words (or as a negating prefix of a word), left to right."""
    starts: dict[int, str] = {}
    position = 0
    for word, _ in segments(clause):
        starts[position] = word
        position += len(word)
    found = []
    for cue in ZH_NEGATION.finditer(clause):
        holder = starts.get(cue.start())
        if holder is None:
            continue  # inside a word: 特别, 淹没
        if len(holder) > len(cue.group(0)):
            if cue.group(0) not in _FUSED_CUES:
                continue  # a longer word that starts with a cue's characters: 不同, 不要脸
            whole = gloss(holder)
            if whole is not None and not _NEGATING_GLOSS.search(whole):
                continue  # 别墅 (villa), 无奈 (helpless): a word of its own
        found.append(cue)
    return found


def negation_split(clause: str, segments: Callable[[str], list[tuple[str, str]]],
                   gloss: Callable[[str], str | None],
                   describes: Callable[[str], bool] = lambda word: False) -> NegationSplit:
    """The negated part of ``clause`` and the wanted parts, as index ranges (module docstring); ``segments`` cuts
    Chinese into words, ``gloss`` tells whether a word fused with a cue is a word of its own, ``describes`` whether
    a word jieba tags as a verb is an adjective ("拥挤" is first of all "crowded")."""
    cues = [m for m in (EN_NEGATION.search(clause), *_chinese_cues(clause, segments, gloss)[:1]) if m is not None]
    if not cues:
        return (0, 0), [(0, len(clause))]
    cue = min(cues, key=lambda m: m.start())
    if not _HAN.match(cue.group(0)):
        stop = _EN_NEGATION_END.search(clause, cue.end())
        negated_end = stop.start() if stop is not None else len(clause)
        return (cue.end(), negated_end), [(0, cue.start()), (negated_end, len(clause))]
    if not re.search(r"[\u4e00-\u9fffa-z]", re.sub(r"[了啊的呀吧哦呢都也]", "", clause[cue.end() :])):
        return (0, cue.start()), []
    negated_end = len(clause)
    position = cue.end()
    named = False  # a thing named before 的, not only a quantifier or an adjective
    for word, flag in segments(clause[cue.end() :]):
        ends = word in _ZH_NEGATION_END and (word != "的" or named)
        if ends and position > cue.end():
            negated_end = position
            break
        named = named or not (flag.startswith(_DESCRIBING_FLAGS) or (flag.startswith("v") and describes(word)))
        position += len(word)
    return (cue.end(), negated_end), [(0, cue.start()), (negated_end, len(clause))]


def strip_cues(text: str) -> str:
    """``text`` with every Chinese cue blanked to 、 (same length): "文字无水印" after a first 无 reads as two items."""
    return ZH_NEGATION.sub(lambda m: "、" * len(m.group(0)), text)
