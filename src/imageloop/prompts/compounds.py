"""Chinese words CC-CEDICT lacks, read from their parts: compounds split where their head is, materials before a
thing ("小木屋": small wooden house), a job suffix's person ("快递员": express delivery worker), a verb with its
particle, direction or result ("坐在": sitting; "铺满": spreading). :mod:`imageloop.prompts.reading` uses these on
each word jieba gives it.
"""

from __future__ import annotations

from imageloop.prompts.dictionary import ChineseDictionary
from imageloop.prompts.words import unreal_words

__all__ = ["AGENT_SUFFIXES", "COMPLEMENTS", "MATERIALS", "STYLE_WORDS", "VERB_ENDINGS", "agent_word", "compound_spans",
           "gerund", "gloss_compound", "is_modifier", "plain_colour"]

# What a thing is made of, said before it ("木桌": a wooden table, not "tree table"; "石桥": a stone bridge): the
# dictionary glosses the character as the thing itself (tree, rock), English uses the material's attributive form.
MATERIALS = {"木": "wooden", "石": "stone", "铁": "iron", "铜": "bronze", "竹": "bamboo", "纸": "paper", "布": "cloth",
             "皮": "leather", "丝": "silk", "毛": "woollen", "玉": "jade", "瓷": "porcelain", "陶": "clay",
             "泥": "clay", "沙": "sand", "土": "earthen"}
VERB_ENDINGS = "着了过在到起"  # aspect and result particles after a verb: "坐在" sits, "戴着" wears
# What can follow a verb in one word besides its object: particles, directions, results ("抱出", "挂满").
COMPLEMENTS = VERB_ENDINGS + "出上下来去进回开满完好住走成见"
STYLE_WORDS = frozenset(("风格", "风", "感", "色", "系", "味"))  # "木风格" is no thing made of wood
# The person a job or activity word makes, for words CC-CEDICT lacks ("快递员": express delivery worker; "咖啡师":
# coffee specialist, not "coffee teacher"); the dictionary's own words keep its gloss ("理发师": barber).
AGENT_SUFFIXES = {"员": "worker", "工": "worker", "师": "specialist", "者": "person"}


def gerund(verb: str) -> str:
    """"sit" → "sitting", "look after" → "looking after", "put on or wear" → "wearing" (what prompts say)."""
    words = verb.split(" or ")[-1].split()
    if not words:
        return verb
    head = words[0]
    if head.endswith("ing") or not head.isalpha():
        return " ".join(words)
    if head.endswith("ie"):
        head = head[:-2] + "ying"
    elif head.endswith("e") and not head.endswith(("ee", "ye", "oe")) and len(head) > 2:
        head = head[:-1] + "ing"
    elif (len(head) <= 4 and len(head) >= 3 and head[-1] not in "aeiouwxy" and head[-2] in "aeiou"
          and head[-3] not in "aeiou"):
        head = head + head[-1] + "ing"
    else:
        head += "ing"
    if unreal_words(head):  # "miniaturizing": keep the verb as the dictionary gives it
        head = words[0]
    return " ".join([head, *words[1:]])


def gloss_compound(word: str, dictionary: ChineseDictionary, *, noun: bool = False, verb: bool = False) -> str | None:
    """Gloss of ``word``; of the verb before an aspect particle ("坐在" → "sit", "戴着" → "wear"); or of its
    longest known parts ("窗台上" → "windowsill"). ``noun``, ``verb``: the segmenter tagged it a noun, a verb."""
    whole = dictionary.gloss(word)
    if whole is not None:
        return whole
    # A verb and its particle ("坐在": sits); a word tagged a verb, also its direction or result ("铺满": spreads,
    # not "shop"; "树下" is no verb: under the tree).
    stem = word.rstrip(COMPLEMENTS if verb else VERB_ENDINGS)
    if stem and stem != word:
        found = dictionary.gloss(stem, verb=True)
        if found is not None:
            return gerund(found)
    if len(word) > 2 and word[0] in "一二两三几每这那":  # "一棵树": a numeral and measure word fused on
        for rest in (word[2:], word[1:]):
            found = dictionary.gloss(rest)
            if found is not None:
                return found
    for particle in "着了":  # "骑着马": jieba's one word is a verb, its particle and a noun ("riding horse")
        verb_part, _, noun_part = word.partition(particle)
        if verb_part and noun_part and len(word) > 2:
            act, thing = dictionary.gloss(verb_part, verb=True), dictionary.gloss(noun_part)
            if act is not None and thing is not None:
                return f"{gerund(act)} {thing}"
    agent = agent_word(word, dictionary)
    if agent is not None:
        return agent
    if len(word) > 2 and word.endswith("色"):  # "米黄色": the colour 米黄 (beige), not "rice yellow"
        found = dictionary.gloss(word[:-1])
        if found is not None:
            return found
    if len(word) > 1 and word[0] in "太很超好最更挺":  # "太暗": a degree adverb fused on
        found = dictionary.gloss(word[1:])
        if found is not None:
            return found
    spans = compound_spans(word, dictionary, noun=noun)
    if spans:
        return " ".join(gloss for _, _, gloss in spans)
    for size in range(len(word) - 1, 0, -1):  # the head noun at least: "驯兽师" → "specialist"
        head = AGENT_SUFFIXES.get(word[-1]) if size == 1 else None
        head = head or dictionary.gloss(word[-size:])  # a job suffix is its person, not 师 "teacher"
        if head is not None and (size > 1 or " " not in head):
            # A colour character keeps its colour ("橘猫": 橘色 is "orange", so "orange cat", not "cat").
            colour = plain_colour(word[0], dictionary) if len(word) - size == 1 else None
            return f"{colour} {head}" if colour is not None else head
    return None


def agent_word(word: str, dictionary: ChineseDictionary) -> str | None:
    """The person of a job word CC-CEDICT lacks ("快递员": express delivery worker, "登山者": mountaineering person);
    None when its last two characters are a word of their own ("芭蕾舞者": 舞者 is a dancer)."""
    if len(word) < 3 or word[-1] not in AGENT_SUFFIXES or word[-2:] in dictionary:
        return None
    found = dictionary.gloss(word[:-1])
    return f"{found} {AGENT_SUFFIXES[word[-1]]}" if found is not None else None


def plain_colour(char: str, dictionary: ChineseDictionary) -> str | None:
    """The colour ``char`` names as one plain word ("粉" → "pink": 粉色), or None ("茶色" is "tea-colored")."""
    colour = dictionary.gloss(char + "色") if char != "色" else None
    return colour if colour is not None and colour.isalpha() else None


def _piece_spans(word: str, dictionary: ChineseDictionary, *, from_end: bool) -> list[tuple[int, int, str]] | None:
    """``word`` as known pieces (start, end, gloss), longest first from one end, in reading order; a one-character
    piece must gloss as one plain word, a trailing locative (上, 里...) is dropped; None when a part is unknown or most
    pieces are single characters."""
    parts: list[tuple[int, int, str]] = []
    singles = 0
    colour_word = word.endswith(("色", "色调"))
    rest = word.rstrip("上下里中外边旁前后") or word
    offset = 0  # where ``rest`` starts in ``word``
    while rest:
        for size in range(len(rest), 0, -1):
            piece = rest[-size:] if from_end else rest[:size]
            # In a colour word, or first in a word, a character is its colour ("粉紫色", "粉兔": 粉 as 粉色 "pink",
            # not "powder").
            first = size == len(rest) if from_end else not parts
            colour = plain_colour(piece, dictionary) if size == 1 and (colour_word or first) else None
            # A material before the rest of the word is what it is made of ("小木屋": small wooden house).
            before_head = bool(parts) if from_end else size < len(rest)
            material = MATERIALS.get(piece) if size == 1 and before_head and not colour_word else None
            gloss = colour or material or dictionary.gloss(piece)
            if gloss is not None and (size > 1 or (" " not in gloss and "-" not in gloss)):
                start = offset + len(rest) - size if from_end else offset
                parts.append((start, start + size, gloss))
                singles += size == 1 and not (colour or material or is_modifier("", piece))
                if from_end:
                    rest = rest[:-size]
                else:
                    rest, offset = rest[size:], offset + size
                break
        else:
            return None
    if len(word) > 2 and singles * 2 > len(parts):
        return None  # mostly single characters: a name or a word the dictionary lacks ("圣托里尼")
    return list(reversed(parts)) if from_end else parts


def compound_spans(word: str, dictionary: ChineseDictionary, *, noun: bool) -> list[tuple[int, int, str]] | None:
    """The pieces :func:`gloss_compound` reads an unknown ``word`` as: fewest pieces; on a tie, a noun is its
    longest start and the head after it ("油菜花": oilseed rape flower, not "oil cauliflower"; "苹果树": apple tree)
    unless it opens with a modifier or colour character ("小女孩": small girl); anything else its longest end
    ("排长队": to queue in a long line, not "platoon leader, team")."""
    end_first = not noun or is_modifier("", word[0]) or plain_colour(word[0], dictionary) is not None
    splits = [s for s in (_piece_spans(word, dictionary, from_end=end_first),
                          _piece_spans(word, dictionary, from_end=not end_first)) if s]
    return min(splits, key=len) if splits else None


def is_modifier(flag: str, word: str) -> bool:
    return flag.startswith("a") or (len(word) == 1 and (word in "小大老新旧红白黑蓝绿黄金银" or word in MATERIALS))
