"""Read an intent into English phrases and negated phrases, in any mix of English and Chinese.

The lexicon handles the words it knows (:meth:`Lexicon.find_terms`); this module reads everything else, so a word
the lexicon was never written for ("宇航员", "lighthouse", "水墨画") still reaches the prompt:

1. The text is normalised and split into clauses at punctuation and "but"/"但是".
2. A negation cue ("no", "without", "don't want", "不要", "别", "没有"...) negates part of its clause
   (:mod:`imageloop.prompts.negation`): those phrases go to the negative prompt.
3. Spans the lexicon matched are left to the lexicon (``covered``).
4. Latin runs are English: request filler and stopwords split them into phrases; typos are corrected
   (:func:`imageloop.prompts.words.correct_word`).
5. Han runs are segmented by jieba with parts of speech; particles, pronouns, numerals, adverbs and request verbs
   ("帮我画") go; each word is glossed by CC-CEDICT (:mod:`imageloop.prompts.dictionary`), unknown compounds by
   their longest known parts; modifiers join the noun they describe ("孤独的宇航员" → "lonely astronaut").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from imageloop.prompts.compounds import (
    AGENT_SUFFIXES,
    COMPLEMENTS,
    MATERIALS,
    STYLE_WORDS,
    agent_word,
    compound_spans,
    gerund,
    gloss_compound,
    is_modifier,
)
from imageloop.prompts.dictionary import ChineseDictionary, load_dictionary
from imageloop.prompts.lexicon import Lexicon, TermMatch, normalise_text
from imageloop.prompts.negation import negation_split, strip_cues
from imageloop.prompts.segment import segments, warm_up_segmenter
from imageloop.prompts.words import correct_word

__all__ = ["IntentReading", "Phrase", "read_intent", "warm_up_reading"]

MAX_PHRASE_WORDS = 5
# 、 lists items inside a clause ("不要文字、水印": both are negated), so it does not end one.
_CLAUSE = re.compile(r"[,.;:!?，。；：！？\n()（）\[\]【】]+|\bbut\b|但是|不过")
_HAN_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_LATIN_RUN = re.compile(r"[a-z0-9][a-z0-9' -]*[a-z0-9]|[a-z0-9]")
_NUMERALS = frozenset("一二两三四五六七八九十几每这那")
_MEASURE_WORDS = frozenset("个只位名条头匹张座棵朵艘辆把件")
_COUNTING = frozenset("一二两三四五六七八九十百千万亿几半零〇多数第每某")
# Measure words that are things in the picture: containers and groups ("一碗面" is a bowl of noodles).
_CONTAINERS = frozenset("碗杯瓶盘壶篮盒袋桶箱罐群束排")
_COUNTERS = _MEASURE_WORDS | _CONTAINERS
_LOCATIVES = frozenset("上里中下边旁内外前后")
# Verbs a request opens with; a measure word after one counts the thing asked for ("画个头像": draw an avatar).
_REQUEST_VERBS = frozenset(("画", "来", "要", "做", "生成", "整", "弄", "拍"))
# 者 is the agentive suffix jieba splits off ("舞者"); its gloss ("one who") is no prompt word.
# jieba part-of-speech tags of words that carry no picture: particles, prepositions, pronouns, numerals,
# measure words, conjunctions, adverbs, modal and exclamation words, punctuation, locatives.
_ZH_DROP_FLAGS = ("u", "p", "r", "m", "q", "c", "d", "y", "e", "o", "x", "f", "w")
_ZH_DROP_WORDS = frozenset((
    "帮", "帮我", "画", "画个", "画一", "想", "想要", "要", "来", "给", "给我",
    "生成", "做", "是", "有", "请", "能", "可以", "一下", "一张", "一幅", "一个",
    "一只", "图", "图片", "画面", "感觉", "风格", "那种", "这种", "样子", "效果",
    "东西", "氛围", "的话", "者", "正在", "正", "在", "会"
))
# Prepositions and filler the lexicon's stopwords leave out; they split phrases and are dropped.
_EN_STOPWORDS = frozenset((
    "during", "while", "through", "within", "around", "across", "along", "among", "toward", "towards", "near",
    "next", "beside", "behind", "onto", "upon", "amid", "amidst", "inside", "outside", "where", "which", "who",
    "whose", "what", "when", "how", "also", "maybe", "perhaps", "kinda", "sorta", "something", "someone",
    "somewhere", "everything", "lots", "above", "below", "beneath", "underneath", "beyond", "between", "atop", "via"
))
# Lexicon stopwords that still mean something in a picture request ("tiny crown", "film photo").
_PICTURE_WORDS = frozenset(("tiny", "little", "big", "photo", "photos", "pic", "shot", "style", "scene"))
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
    negated_spans: tuple[tuple[int, int], ...] = ()  # in the normalised intent: what a negation cue reaches

    def negates(self, start: int, end: int) -> bool:
        """True when the span [start, end) of the normalised intent lies in a negated part."""
        return any(a <= start and end <= b for a, b in self.negated_spans)

    @property
    def english(self) -> str:
        """The phrases as one English line (what the LLM strategies are given)."""
        return ", ".join(p.text for p in self.phrases)


def warm_up_reading() -> None:
    """Load the segmenter, the dictionary and the word list now (start-up) instead of on the first intent."""
    warm_up_segmenter()
    correct_word("warmup")


def _modifiers_alone(pending: list[tuple[str, str]]) -> Phrase:
    """Modifiers whose noun never came, as one phrase ("bowl of" alone is "bowl")."""
    english = " ".join(g for g, _ in pending).removesuffix(" of")
    return Phrase(english, "".join(w for _, w in pending), True)


def _rejoin_locatives(words: list[tuple[str, str]], dictionary: ChineseDictionary) -> list[tuple[str, str]]:
    """jieba's words with a locative given back to the place before it: "天/台上" is "天台/上" (on the rooftop), not
    "day" and "on stage", when the character and the place make a common word the dictionary knows; after a
    one-character modifier the place stands alone ("老/街上" is "老/街/上", an old street); a one-character verb
    right before a locative is that place ("树/下": under the tree) unless its first sense is an action ("升/上":
    rising)."""
    out: list[tuple[str, str]] = []
    index = 0
    while index < len(words):
        word, flag = words[index]
        following = words[index + 1][0] if index + 1 < len(words) else ""
        if len(word) == 1 and _HAN_RUN.fullmatch(word) and word not in _COUNTING and len(following) == 2 \
                and following[1] in _LOCATIVES:
            joined = word + following[0]
            if joined in dictionary and not dictionary.is_name(joined):
                out += [(joined, "n"), (following[1], "f")]
                index += 2
                continue
            if is_modifier(flag, word) and following[0] in dictionary:
                out += [(word, flag), (following[0], "n"), (following[1], "f")]
                index += 2
                continue
        if len(word) == 1 and following in _LOCATIVES and (flag.startswith("v") or flag == "zg"):
            # "桃花树下": a place before a locative, the tree, not the verb "cultivate"; a character whose first
            # sense is an action moves that way ("升上夜空": rising into the night sky, not "liter").
            flag = "v" if dictionary.acts(word) else "n"
        out.append((word, flag))
        index += 1
    return out


def _join_agent_suffixes(words: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """jieba's words with a job suffix it cut off given back to the word before ("快递/员" is one person, the express
    delivery worker, not "express delivery" and a measure word)."""
    out: list[tuple[str, str]] = []
    for word, flag in words:
        if word in AGENT_SUFFIXES and out and len(out[-1][0]) > 1 and _HAN_RUN.fullmatch(out[-1][0]) \
                and not out[-1][1].startswith(_ZH_DROP_FLAGS):
            out[-1] = (out[-1][0] + word, "n")
            continue
        out.append((word, flag))
    return out


def _split_locative_heads(words: list[tuple[str, str]], dictionary: ChineseDictionary) -> list[tuple[str, str]]:
    """jieba's words with a locative it fused onto the next word split off, where the whole is no word the dictionary
    knows and the rest is: "篝火/旁弹/吉他" is "旁/弹" (plays the guitar beside the bonfire), not a "bullet";
    "公园/下象棋" is "下/象棋" (chess). The rest is a verb when its verb reading is an action.
    Only after a noun, or first in what the lexicon left of a clause (the lexicon read the noun)."""
    out: list[tuple[str, str]] = []
    for word, flag in words:
        rest = word[1:]
        if len(word) > 1 and word[0] in "上下里边旁" and word not in dictionary and rest in dictionary \
                and _HAN_RUN.fullmatch(word) and not flag.startswith(("nr", "ns", "nz")) \
                and (not out or out[-1][1].startswith("n")):  # a name's part is no locative ("圣托/里尼")
            out += [(word[0], "f"), (rest, "v" if dictionary.acts(rest) else "n")]
            continue
        out.append((word, flag))
    return out


def _split_request_measure(words: list[tuple[str, str]], dictionary: ChineseDictionary) -> list[tuple[str, str]]:
    """jieba's words with a measure word after a request verb given back to the noun it counts: "画/个头/像" is
    "画/个/头像" (draw an avatar), not "height" and "resemble"; only when the rest and the next word make one word the
    dictionary knows ("画个子很高的女孩" keeps 个子, height)."""
    out: list[tuple[str, str]] = []
    index = 0
    while index < len(words):
        word, flag = words[index]
        after_request = bool(out) and out[-1][0] in _REQUEST_VERBS
        if after_request and len(word) > 1 and word[0] in _MEASURE_WORDS and index + 1 < len(words):
            joined = word[1:] + words[index + 1][0]
            if joined in dictionary:
                out += [(word[0], "q"), (joined, "n")]
                index += 2
                continue
        out.append((word, flag))
        index += 1
    return out


def _retag(word: str, flag: str, previous_word: str) -> tuple[str, str]:
    """``word`` and its tag as read after ``previous_word``, where jieba's tag is wrong for a picture request."""
    if word == "画" and previous_word[:1] in _NUMERALS and len(previous_word) == 2:
        return "画作", "n"  # "一幅画": a counted 画 is a painting, not the request verb "draw"
    if previous_word in _REQUEST_VERBS and word in _MEASURE_WORDS:
        return word, "q"  # "来张赛博朋克的头像": the request counts one picture, 张 is no "sheet of paper"
    counted = previous_word[:1] in _NUMERALS and previous_word[1:] in _COUNTERS
    if flag == "m" and (previous_word in ("的", "之") or counted) and \
            not any(c in _COUNTING or c.isdigit() for c in word):
        return word, "n"  # "门口的少年", "一个少年": the noun, which jieba's dictionary tags as a numeral
    return word, flag


def _gloss_here(word: str, flag: str, previous_word: str, following: tuple[str, str],
                dictionary: ChineseDictionary) -> str | None:
    """The English of ``word`` between ``previous_word`` and the ``following`` (word, tag): a colour, a place, a
    verb (as a gerund) or the word's own gloss; None when nothing reads it."""
    if len(word) == 1 and following[0].endswith("色"):
        colour = dictionary.gloss(word + "色")  # "粉 紫色": pink, not powder
        if colour is not None:
            return colour
    if word == "调" and previous_word.endswith("色"):
        colour = dictionary.gloss("色调")  # "蓝色 调" is a blue tone, not a transfer
        if colour is not None:
            return colour
    if word in ("风", "风格") and previous_word.isascii() and previous_word.isalnum():
        return "style"  # "ins风", "y2k风": the Latin word's style, no wind
    if flag == "n" and len(word) == 2 and dictionary.far_place(word) and is_modifier("", word[0]):
        # A word CC-CEDICT knows only as a place elsewhere, which jieba tags a common noun: "老街" is an old street,
        # not Lao Cai, Vietnam ("银河" stays the Milky Way).
        modifier, head = dictionary.gloss(word[0]), dictionary.gloss(word[1])
        if modifier is not None and head is not None:
            return f"{modifier} {head}"
    place = dictionary.name_gloss(word) if flag == "ns" else None  # jieba's place name: "京都" is Kyoto
    if place is not None:
        return place
    # After a verb's 着/了 comes its object: "拿着花" holds a flower (jieba tags 花 "spend" there).
    verbal = dictionary.gloss(word, verb=True) if flag.startswith("v") and previous_word not in ("着", "了") else None
    if verbal is None and flag.startswith("v") and len(word) == 2 and word[1] in "着了" and \
            following[1][:1] in ("n", "a"):
        verbal = dictionary.gloss(word[0], verb=True)  # "穿着 西装": wearing a suit, not "clothes"
    if verbal is not None:
        return gerund(verbal)
    if flag.startswith("v") and len(word) == 2 and word not in dictionary and word[1] not in COMPLEMENTS:
        # "听歌": listening to a song, no "smile"; "坐在" is the verb alone (below)
        verb, thing = dictionary.gloss(word[0], verb=True), dictionary.gloss(word[1])
        if verb is not None and thing is not None:
            return f"{gerund(verb)} {thing}"
    return word if flag == "eng" else gloss_compound(word, dictionary, noun=flag.startswith("n"),
                                                      verb=flag.startswith("v"))


def _read_han(words: list[tuple[str, str]], dictionary: ChineseDictionary, untranslated: list[str],
              stopwords: frozenset[str], *, negated: bool = False, before: str = "") -> list[Phrase]:
    """Phrases of jieba's ``words``; ``before`` is the Latin word written right before them ("ins风"), if any.
    ``negated``: any word before 的 describes the noun after it (a negated "畸形的手" is one thing, "deformed hand",
    not a deformity and a hand), and "一个人都没有" excludes people."""
    words = _split_locative_heads(_join_agent_suffixes(words), dictionary)
    words = _rejoin_locatives(_split_request_measure(words, dictionary), dictionary)
    phrases: list[Phrase] = []
    pending: list[tuple[str, str]] = []  # modifiers waiting for their noun (English order: modifier first)
    previous = before
    one = False  # counted as one ("一个", "一位") until the noun it counts: "一个戴面具的人" is a person
    for index, (word, flag) in enumerate(words):
        one = one or previous == "一" or (previous[:1] == "一" and previous[1:] in _MEASURE_WORDS)
        if previous in _NUMERALS and len(word) > 1 and word[0] in _MEASURE_WORDS:
            word = word[1:]  # "一 个人": jieba joins the measure word to the noun ("a person", not "personal")
        if len(word) == 3 and word[0] in _NUMERALS and word[1] in _MEASURE_WORDS:
            one = one or word[0] == "一"
            word, flag = word[2], "n"  # "一条龙": a dragon, counted, not the idiom "integrated chain"
        previous_word, previous = previous, word
        if word in ("的", "之") and pending:
            continue  # "孤独的宇航员": the modifier stays pending across 的
        if flag.startswith("m") and len(word) > 1 and word[-1] in _CONTAINERS and word[0] in _NUMERALS:
            container = dictionary.gloss(word[-1])  # "一碗面": a bowl of noodles, "一群锦鲤": a group of koi
            if container is not None:
                if index + 1 < len(words) and words[index + 1][1].startswith("n"):
                    pending.append((f"{container} of", word))
                else:
                    phrases.append(Phrase(container, word, True))
                continue
        word, flag = _retag(word, flag, previous_word)
        if previous_word == "在" and len(word) == 1 and not flag.startswith(("v", "f")) and dictionary.acts(word):
            flag = "v"  # "在玩沙子", "在等车": 在 before an action is its progressive (jieba tags 玩 a noun, 等 "etc")
        # jieba tags some names it was never told about as adverbs ("莫奈/d"); CC-CEDICT knows them as names.
        name = len(word) > 1 and dictionary.is_name(word)
        # "画成卡通": 成 after the request verb is "as" (drawn as a cartoon), not "succeed".
        into = word == "成" and (previous_word in _REQUEST_VERBS or previous_word.endswith("画"))
        if (flag.startswith(_ZH_DROP_FLAGS) and not name) or word in _ZH_DROP_WORDS or into:
            if pending:
                phrases.append(_modifiers_alone(pending))
                pending = []
            continue
        if word == "风" and (phrases or pending):  # "中国风", "胶片风": the style suffix, not the wind
            word, flag = "风格", "n"
        following = words[index + 1] if index + 1 < len(words) else ("", "")
        if following[0] == "着" and flag.startswith("a"):
            flag = "v"  # "长着翅膀": 着 follows a verb, so 长 grows (wings), it is no length
        gloss = _gloss_here(word, flag, previous_word, following, dictionary)
        if gloss is None:
            untranslated.append(word)
            continue
        if gloss in stopwords:  # "所有" → "all", "任何" → "any": no picture
            continue
        if one and gloss == "people" and not negated:
            gloss = "person"
        before_de = index + 1 < len(words) and words[index + 1][0] in ("的", "之")
        if is_modifier(flag, word) or (negated and before_de):
            if word in MATERIALS and following[1].startswith("n") and following[0] not in STYLE_WORDS:
                gloss = MATERIALS[word]  # "木/桌": a wooden table
            pending.append((gloss, word))
            continue
        one = one and (before_de or not flag.startswith("n"))
        english = [g for g, _ in pending] + [gloss]
        phrases.append(Phrase(" ".join(english)[:80], "".join(w for _, w in pending) + word, True))
        pending = []
    if pending:
        phrases.append(_modifiers_alone(pending))
    return phrases


def _read_latin(text: str, stopwords: frozenset[str], corrections: dict[str, str]) -> list[Phrase]:
    text = _EN_FILLER.sub(" ", text.strip()).strip()
    phrases: list[Phrase] = []
    current: list[str] = []
    for token in re.findall(r"[a-z0-9][a-z0-9'-]*", text):
        if token == "of" and current:  # "depth of field", "cup of coffee": one phrase
            current.append(token)
            continue
        if token in stopwords or token in _EN_STOPWORDS or token in {"i", "a"}:
            if current and current[-1] == "of":
                continue  # "cup of a coffee": the article inside an of-phrase goes
            if current:
                phrases.append(Phrase(" ".join(current), " ".join(current)))
                current = []
            continue
        fixed = correct_word(token)
        if fixed != token:
            corrections[token] = fixed
        current.append(fixed)
        if len(current) >= MAX_PHRASE_WORDS:
            words = current[:-1] if current[-1] == "of" else current
            phrases.append(Phrase(" ".join(words), " ".join(words)))
            current = []
    if current and current[-1] == "of":
        current.pop()
    if current:
        phrases.append(Phrase(" ".join(current), " ".join(current)))
    return phrases


def _covered_mask(text: str, start: int, covered: Sequence[TermMatch]) -> list[bool]:
    """Which characters of ``text`` (which starts at ``start`` in the normalised intent) the lexicon matched."""
    mask = [False] * len(text)
    for match in covered:
        for i in range(max(match.start, start), min(match.end, start + len(text))):
            mask[i - start] = True
    return mask


def lexicon_matches_inside_words(text: str, matches: Sequence[TermMatch]) -> list[TermMatch]:
    """``matches`` without the Chinese ones that sit strictly inside a longer word the dictionary knows: the
    lexicon's "山" (mountains) is no match in "火山" (volcano), nor its "雨" in "暴风雨" (storm), nor its "海" in the
    海盗 (pirate) of "海盗船", a word the dictionary reads by its pieces."""
    norm = normalise_text(text)
    if not any(not m.term.isascii() for m in matches):
        return list(matches)
    dictionary = load_dictionary()
    words: list[tuple[int, int]] = []
    position = 0
    for word, flag in segments(norm):
        if len(word) > 1 and _HAN_RUN.fullmatch(word):
            if dictionary.gloss(word) is not None or agent_word(word, dictionary):
                words.append((position, position + len(word)))  # "登山者": a mountaineer, no lexicon "山"
            else:  # a word the dictionary lacks, read by its pieces: the "海" of "海盗船" belongs to 海盗 (pirate)
                spans = compound_spans(word, dictionary, noun=flag.startswith("n")) or []
                words += [(position + a, position + b) for a, b, _ in spans if b - a > 1]
        position += len(word)
    def inside(match: TermMatch) -> bool:
        return any(a <= match.start and match.end <= b and b - a > match.end - match.start for a, b in words)
    return [m for m in matches if m.term.isascii() or not inside(m)]


def _han_words(run: str, offset: int, mask: Sequence[bool], dictionary: ChineseDictionary) -> list[tuple[str, str]]:
    """jieba's words of a Han ``run`` (at ``offset`` in the clause), leaving out words that touch a lexicon match:
    the lexicon says those in its own tags ("雪花" goes whole when the lexicon read its 雪). What the match leaves of
    a word stays when it is a word of two characters or more ("樱花雨": the lexicon reads 雨, 樱花 stays)."""
    out = []
    position = offset
    for word, flag in segments(run):
        covered = mask[position : position + len(word)]
        if not any(covered):
            out.append((word, flag))
        elif word.endswith("色") and out and len(out[-1][0]) == 1:
            out.append(("色", "x"))  # "灰 蓝色": the lexicon reads the colour, 灰 still stands before one (gray)
        else:
            rest = _uncovered_end(word, covered)
            if len(rest) > 1 and rest in dictionary:
                out.append((rest, "n"))
        position += len(word)
    return out


def _uncovered_end(word: str, covered: Sequence[bool]) -> str:
    """The characters of ``word`` before its first covered one, or else after its last covered one."""
    first = covered.index(True)
    if first > 0:
        return word[:first]
    last = len(covered) - 1 - list(reversed(covered)).index(True)
    return word[last + 1 :]


def _read_span(text: str, mask: Sequence[bool], lexicon: Lexicon, dictionary: ChineseDictionary,
               untranslated: list[str], corrections: dict[str, str], *, negated: bool = False) -> list[Phrase]:
    stopwords = lexicon.stopwords - _PICTURE_WORDS
    latin = "".join("," if covered or ch == "、" or _HAN_RUN.match(ch) else ch
                    for ch, covered in zip(text, mask, strict=True))
    phrases: list[Phrase] = []
    for piece in re.split(r",+", latin):
        phrases += _read_latin(piece, stopwords, corrections)
    for han in _HAN_RUN.finditer(text):
        latin_before = _LATIN_BEFORE.search(text, 0, han.start())
        words = _han_words(han.group(0), han.start(), mask, dictionary)
        phrases += _read_han(words, dictionary, untranslated, stopwords, negated=negated,
                             before=latin_before.group(0) if latin_before else "")
    return phrases


_LATIN_BEFORE = re.compile(r"[A-Za-z0-9]+$")
_DECADE = re.compile(r"(\d{2,4})\s*年代|([一二三四五六七八九])十年代")
_DIGITS = {c: str(i) for i, c in enumerate("〇一二三四五六七八九")}


def _decades(text: str) -> str:
    """"90年代" → "90s", "八十年代" → "80s" (a decade, not "90, era"), padded to the same length so that offsets into
    the normalised intent still hold."""
    def decade(found: re.Match[str]) -> str:
        digits = found.group(1) or _DIGITS[found.group(2)] + "0"
        return f"{digits}s".ljust(len(found.group(0)))
    return _DECADE.sub(decade, text)


def read_intent(intent: str, lexicon: Lexicon, covered: Iterable[TermMatch] = ()) -> IntentReading:
    """The English phrases and negated phrases of ``intent`` outside the lexicon's ``covered`` matches (pure, apart
    from loading the segmenter and dictionary once)."""
    norm = _decades(normalise_text(intent))
    matches = sorted(covered, key=lambda m: m.start)
    dictionary = load_dictionary()
    wanted: list[Phrase] = []
    negated: list[Phrase] = []
    untranslated: list[str] = []
    corrections: dict[str, str] = {}
    spans: list[tuple[int, int]] = []
    position = 0
    for boundary in [*_CLAUSE.finditer(norm), None]:
        end = boundary.start() if boundary is not None else len(norm)
        clause = norm[position:end]
        mask = _covered_mask(clause, position, matches)
        (neg_start, neg_end), wanted_ranges = negation_split(clause, segments, dictionary.gloss, dictionary.describes)
        if neg_end > neg_start:
            spans.append((position + neg_start, position + neg_end))
        for a, b in wanted_ranges:
            wanted += _read_span(clause[a:b], mask[a:b], lexicon, dictionary, untranslated, corrections)
        negated += _read_span(strip_cues(clause[neg_start:neg_end]), mask[neg_start:neg_end], lexicon, dictionary,
                              untranslated, corrections, negated=True)
        position = boundary.end() if boundary is not None else end
    negative_texts = {p.text for p in negated}
    unique = [p for p in {p.text: p for p in wanted}.values() if p.text not in negative_texts]
    return IntentReading(
        phrases=tuple(unique),
        negatives=tuple({p.text: p for p in negated}.values()),
        untranslated=tuple(dict.fromkeys(untranslated)),
        corrections=corrections,
        negated_spans=tuple(spans),
    )
