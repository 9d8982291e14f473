"""The rules strategy: vague EN/ZH words → tags through the lexicon. Pure, fast, always available (the fallback).

"I want that really bleak feeling" and "想要那种很丧的感觉" both become
``(monochrome:1.2), rain, cinematic lighting, (bleak:1.2), lonely figure``. Explicit vocabulary words beat what a
vague word implies, a specific vague word beats a broad one ("bleak but sunny" keeps the sun), the first wins
among equals, a negated term goes to
the negative prompt ("no rain", "不要下雨", "without people"), and the words the lexicon does not know are read by
:func:`imageloop.prompts.reading.read_intent` and kept as free tags, in English: "lighthouse", "宇航员" → "astronaut".
A free phrase that states a vocabulary value ("thunderstorm" → rain) sets it, so concepts cannot contradict it.
Alternatives fill attributes the intent left open with the lexicon's completions (a look per alternative).
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field, replace

from imageloop.prompts.dictionary import cedict_senses, load_dictionary, usable_senses
from imageloop.prompts.embeddings import default_embedder
from imageloop.prompts.expander._common import Expander, Expansion, Stopwatch
from imageloop.prompts.expander.guard import IntentTag, load_exclusive_values
from imageloop.prompts.language import Language, resolve_language
from imageloop.prompts.lexicon import ATTRIBUTE_ORDER, Lexicon, TermMatch, WeightedTag, load_lexicon, normalise_text
from imageloop.prompts.reading import IntentReading, lexicon_matches_inside_words, read_intent

__all__ = ["RULES_VERSION", "RulesExpander", "ScenePlan", "english_reading", "plan_scene"]

RULES_VERSION = "rules-6"
MAX_FREE_TAGS = 10
# Below this cosine (multilingual encoder) a gloss is another meaning than a tag ("feature article" / "close-up": 0.04;
# synonyms such as "seaside" / "beach" score 0.35-0.66).
_OTHER_MEANING_COSINE = 0.2


@dataclass(frozen=True, slots=True)
class _Value:
    key: str
    weight: float
    explicit: bool


@dataclass
class ScenePlan:
    """What an intent asks for: one value per attribute, extra tags, free English tags and negated terms."""

    values: dict[str, _Value] = field(default_factory=dict)
    extras: list[WeightedTag] = field(default_factory=list)
    free: list[str] = field(default_factory=list)
    negatives: list[str] = field(default_factory=list)
    concepts: list[str] = field(default_factory=list)
    reading: IntentReading = field(default_factory=IntentReading)
    translated: bool = False

    def set(self, attribute: str, key: str, weight: float, *, explicit: bool) -> None:
        """Set a value unless one is already set with at least as much authority (explicit > implied > none)."""
        current = self.values.get(attribute)
        if current is None or (explicit and not current.explicit):
            self.values[attribute] = _Value(key, weight, explicit)
        elif current.key == key and weight > current.weight:
            self.values[attribute] = _Value(key, weight, current.explicit)

    @property
    def is_empty(self) -> bool:
        return not (self.values or self.extras or self.free)

    @property
    def only_excludes(self) -> bool:
        """The intent names only what must not be in the picture ("no people", "不要下雨"): nothing to draw for it."""
        return self.is_empty and bool(self.negatives)

    def own_tags(self, lexicon: Lexicon) -> list[IntentTag]:
        """The person's own words as tags: the values they named, then their free phrases."""
        named = [IntentTag(WeightedTag(lexicon.canonical(a, v.key)), self.translated)
                 for a, v in self.values.items() if v.explicit]
        read = {p.text: p.translated for p in self.reading.phrases}
        return named + [IntentTag(WeightedTag(text), read.get(text, self.translated)) for text in self.free]

    def english(self, lexicon: Lexicon) -> str:
        """The person's own words as English tags, else the values the lexicon read ("" when neither)."""
        own = [tag.tag.render() for tag in self.own_tags(lexicon)]
        keywords = own or [lexicon.canonical(a, v.key) for a, v in self.values.items()]
        return ", ".join(keywords)

    def stated(self) -> dict[str, builtins.set[str]]:
        """Attribute → values the person set (named vocabulary values, and values their phrases state)."""
        out: dict[str, builtins.set[str]] = {a: {v.key} for a, v in self.values.items() if v.explicit}
        exclusive = load_exclusive_values()
        for phrase in self.free:
            for attribute, keys in exclusive.values_in(phrase).items():
                out.setdefault(attribute, set()).update(keys)
        return out


def _apply_value(plan: ScenePlan, lexicon: Lexicon, match: TermMatch) -> None:
    assert match.attribute is not None and match.key is not None
    if match.negated:
        plan.negatives.append(lexicon.canonical(match.attribute, match.key))
    else:
        plan.set(match.attribute, match.key, 1.0, explicit=True)


def _apply_concept(plan: ScenePlan, lexicon: Lexicon, match: TermMatch) -> None:
    assert match.concept is not None
    plan.concepts.append(match.concept)
    for tag in lexicon.concepts[match.concept]:
        value = lexicon.value_of(tag.text)
        if match.negated:
            plan.negatives.append(lexicon.canonical(*value) if value else tag.text)
        elif value is not None:
            plan.set(value[0], value[1], tag.weight, explicit=False)
        elif all(extra.text != tag.text for extra in plan.extras):
            plan.extras.append(tag)


def _own_term(match: TermMatch, lexicon: Lexicon) -> str | None:
    """The person's word, in English, when the prompt should keep it beside what the lexicon makes of it: a phrasing
    other than the tag ("sunset" for dusk, "cabin" for house), or a concept word its tags do not spell out ("cozy",
    "film"). Chinese terms are glossed by CC-CEDICT ("黎明" → "dawn", "童话" → "fairy tale"); a concept word it lacks
    by the concept's name ("冬日" → "winter")."""
    if match.negated:
        return None
    term = match.term if match.term.isascii() else load_dictionary().gloss(match.term)
    if term is None and match.concept is not None:
        term = match.concept.replace("-", " ")
    if term is None:
        return None
    if match.concept is not None:
        spelled = {w for tag in lexicon.concepts[match.concept] for w in tag.text.split()}
        return None if set(term.split()) <= spelled else term
    assert match.attribute is not None and match.key is not None
    canonical = lexicon.canonical(match.attribute, match.key)
    content = set(term.split()) - lexicon.stopwords
    if content <= set(canonical.split()) or _another_meaning(match.term, term, canonical):
        return None
    return term


def _another_meaning(word: str, gloss: str, tag: str) -> bool:
    """True when ``gloss`` is another meaning of ``word`` than the tag the lexicon read: one of the word's CC-CEDICT
    senses is the tag itself and the encoder puts the gloss far from it ("特写": "feature article", not "close-up";
    "海边": "seaside" stays beside "beach")."""
    def plain(text: str) -> str:
        return " ".join(text.replace("-", " ").split())

    if word.isascii() or plain(tag) not in {plain(s) for s in usable_senses(cedict_senses().get(word, []))}:
        return False
    vectors = default_embedder().encode([gloss, tag])
    return float(vectors[0] @ vectors[1]) < _OTHER_MEANING_COSINE


def _negated_word(match: TermMatch) -> str | None:
    """The word of a negated lexicon match as the person said it, in English (Chinese glossed by CC-CEDICT)."""
    if not match.negated:
        return None
    return match.term if match.term.isascii() else load_dictionary().gloss(match.term)


def plan_scene(intent: str, lexicon: Lexicon, language: Language) -> ScenePlan:
    """Read ``intent`` into a :class:`ScenePlan` (pure)."""
    plan = ScenePlan()
    exclusive = load_exclusive_values()
    matches = lexicon_matches_inside_words(intent, lexicon.find_terms(intent))
    plan.reading = read_intent(intent, lexicon, matches)
    # One reading of negation for all words: a term in the reach of any cue ("请勿出现汽车") is negated.
    matches = [replace(m, negated=True) if plan.reading.negates(m.start, m.end) else m for m in matches]
    concepts = [match for match in matches if match.concept is not None]
    # Specific words before broad mood packs: in "bleak but sunny", "sunny" decides the weather.
    for match in sorted(concepts, key=lambda m: len(lexicon.concepts[m.concept or ""])):
        _apply_concept(plan, lexicon, match)
    for match in matches:  # explicit words after concepts so they override what a concept implied
        if match.attribute is None:
            continue
        stated = exclusive.values_in(match.term).get(match.attribute)
        if stated and match.key not in stated:
            continue  # "dawn" is not dusk, though dusk is the nearest value the embedded model knows
        _apply_value(plan, lexicon, match)
    plan.translated = language == "zh"
    own = [term for term in (_own_term(m, lexicon) for m in matches) if term is not None]
    # The person's own word goes to the negative prompt beside the tag: "不要船" excludes boats, not only the
    # sailboat the embedded model knows.
    plan.negatives += [term for term in (_negated_word(m) for m in matches) if term is not None]
    plan.free = list(dict.fromkeys([*own, *(p.text for p in plan.reading.phrases)]))[:MAX_FREE_TAGS]
    plan.negatives += [p.text for p in plan.reading.negatives]
    for phrase in plan.free:  # "thunderstorm" sets the weather the embedded model knows as rain
        for attribute, keys in exclusive.values_in(phrase).items():
            for key in sorted(keys):
                if key in lexicon.vocabulary.get(attribute, {}):
                    plan.set(attribute, key, 1.0, explicit=True)
    positive = {lexicon.canonical(a, v.key) for a, v in plan.values.items()}
    plan.negatives = [n for n in dict.fromkeys(plan.negatives) if n not in positive]
    return plan


def render(plan: ScenePlan, lexicon: Lexicon) -> str:
    """The prompt for a plan: the subject, the person's free phrases (what they asked for, early where it weighs
    most), the other attribute tags in caption order, then the extra tags concepts add."""
    values = [
        WeightedTag(lexicon.canonical(attribute, plan.values[attribute].key), plan.values[attribute].weight).render()
        for attribute in ATTRIBUTE_ORDER
        if attribute in plan.values
    ]
    subject = values[:1] if "subject" in plan.values else []
    tags = [*subject, *plan.free, *values[len(subject):], *(extra.render() for extra in plan.extras)]
    return ", ".join(dict.fromkeys(tags))


def _completed(plan: ScenePlan, lexicon: Lexicon, completion: tuple[WeightedTag, ...]) -> ScenePlan | None:
    """``plan`` plus a completion's values, or None when the completion touches an attribute the plan has."""
    values = [lexicon.value_of(tag.text) for tag in completion]
    if any(v is None or v[0] in plan.values for v in values):
        return None
    out = ScenePlan(dict(plan.values), list(plan.extras), list(plan.free), list(plan.negatives), list(plan.concepts),
                    plan.reading, plan.translated)
    for tag, value in zip(completion, values, strict=True):
        assert value is not None
        out.set(value[0], value[1], tag.weight, explicit=False)
    return out


def english_reading(intent: str, lexicon: Lexicon, language: Language | None = None) -> str:
    """The intent read into English tags, as the local LLM is given it (served and in training alike)."""
    plan = plan_scene(intent, lexicon, resolve_language(intent, language))
    return plan.english(lexicon) or ("" if plan.only_excludes else intent.strip())


class RulesExpander(Expander):
    """Lexicon rules; never declines: an intent with no known word becomes its own prompt."""

    name = "rules"

    def __init__(self, lexicon: Lexicon | None = None) -> None:
        self.lexicon = lexicon or load_lexicon()

    @property
    def version(self) -> str:
        return f"{RULES_VERSION}+lexicon-{self.lexicon.digest}"

    def expand(self, intent: str, *, user: str | None = None, language: Language | None = None) -> Expansion:
        """Always an expansion; ``details`` lists the concepts and attribute values found."""
        watch = Stopwatch()
        lang = resolve_language(intent, language)
        plan = plan_scene(intent, self.lexicon, lang)
        prompt = render(plan, self.lexicon)
        if plan.is_empty:  # no word known; an intent that only excludes gets an empty prompt (its words are negative)
            prompt = "" if plan.only_excludes else normalise_text(intent)
        alternatives = []
        for completion in self.lexicon.completions.values():
            completed = _completed(plan, self.lexicon, completion)
            if completed is not None:
                alternatives.append(render(completed, self.lexicon))
        details = {
            "concepts": plan.concepts,
            "attributes": {a: v.key for a, v in plan.values.items()},
            "free_tags": plan.free,
            "untranslated": list(plan.reading.untranslated),
            "corrections": plan.reading.corrections,
            "fallback": plan.is_empty and not plan.only_excludes,
            "only_excludes": plan.only_excludes,
        }
        return Expansion(
            prompt=prompt,
            negative=", ".join(plan.negatives) or None,
            strategy=self.name,
            version=self.version,
            language=lang,
            latency=watch.seconds,
            details=details,
            alternatives=tuple(dict.fromkeys(a for a in alternatives if a != prompt)),
        )
