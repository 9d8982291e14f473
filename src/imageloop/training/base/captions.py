"""English and Chinese captions for scene specs: many phrasings, tag lists, A1111-style weighted tags.

An attribute missing from a caption means "any value" (the image still has one), which is also what a user
prompt that does not mention it gets.
"""

from __future__ import annotations

import re
from typing import Literal

import numpy as np

from imageloop.training.base.scenes import SCENE_ATTRIBUTES, SceneSpec
from imageloop.training.base.sprites import SUBJECTS_BY_KEY

Language = Literal["en", "zh"]
LANGUAGES: tuple[Language, ...] = ("en", "zh")
SCENE_ORDER = ("place", "weather", "time", "lighting", "colour", "mood", "composition")
# Share of scene attributes a training caption leaves out: the model learns that an unnamed attribute is any value.
CAPTION_OMIT_PROB = 0.15

_EN_OPENERS = ("a photo of", "an image of", "a picture of", "a painting of", "a render of", "", "")
_ZH_OPENERS = ("一张", "一幅", "", "")
_ZH_NOUN_SUFFIX = ("的照片", "的图片", "的画", "")
_WEIGHTED = re.compile(r"\(([^():]+):\s*[0-9.]+\)")


def phrase(attribute: str, key: str, lang: Language, rng: np.random.Generator) -> str:
    """One phrasing of ``attribute``'s value ``key`` (``attribute`` may be ``subject``)."""
    if attribute == "subject":
        subject = SUBJECTS_BY_KEY[key]
        options = subject.en if lang == "en" else subject.zh
    else:
        value = next(v for v in SCENE_ATTRIBUTES[attribute] if v.key == key)
        options = value.en if lang == "en" else value.zh
    return options[int(rng.integers(len(options)))]


def canonical_phrase(attribute: str, key: str, lang: Language) -> str:
    """The first (canonical) phrasing, used by the benchmark's prompts."""
    if attribute == "subject":
        subject = SUBJECTS_BY_KEY[key]
        return (subject.en if lang == "en" else subject.zh)[0]
    value = next(v for v in SCENE_ATTRIBUTES[attribute] if v.key == key)
    return (value.en if lang == "en" else value.zh)[0]


def _article(noun: str) -> str:
    return "an" if noun[:1] in "aeiou" else "a"


def _weight(tag: str, rng: np.random.Generator) -> str:
    roll = rng.random()
    if roll < 0.12:
        return f"({tag}:{rng.choice((1.1, 1.2, 1.3, 1.4))})"
    if roll < 0.16:
        return f"({tag})"
    return tag


def caption(spec: SceneSpec, lang: Language, rng: np.random.Generator,
            omit_prob: float = CAPTION_OMIT_PROB) -> str:
    """A random caption of ``spec`` in ``lang``: a sentence or a (possibly weighted) tag list.

    Each scene attribute is left out with probability ``omit_prob``; the subject is always named.
    """
    kept = [a for a in SCENE_ORDER if rng.random() >= omit_prob]
    rng.shuffle(kept)
    subject = phrase("subject", spec.subject, lang, rng)
    phrases = [phrase(a, getattr(spec, a), lang, rng) for a in kept]
    if rng.random() < 0.4:  # tag list
        tags = [subject, *phrases]
        rng.shuffle(tags)
        sep = ", " if lang == "en" else rng.choice(("，", ", ", "、"))
        return str(sep).join(_weight(t, rng) for t in tags)
    if lang == "en":
        opener = _EN_OPENERS[int(rng.integers(len(_EN_OPENERS)))]
        head = f"{opener} {_article(subject)} {subject}".strip() if opener else f"{_article(subject)} {subject}"
        return ", ".join([head, *phrases])
    opener = _ZH_OPENERS[int(rng.integers(len(_ZH_OPENERS)))]
    head = f"{opener}{subject}{_ZH_NOUN_SUFFIX[int(rng.integers(len(_ZH_NOUN_SUFFIX)))]}"
    return "，".join([head, *phrases])


def strip_weights(text: str) -> str:
    """Remove A1111 weight syntax: ``(tag:1.2)`` and ``(tag)`` become ``tag`` (what the text encoder sees)."""
    text = _WEIGHTED.sub(r"\1", text)
    return text.replace("(", "").replace(")", "")


def prompt_for(spec: SceneSpec, lang: Language) -> str:
    """The benchmark's deterministic prompt naming every attribute with its canonical phrasing."""
    parts = [canonical_phrase(a, getattr(spec, a), lang) for a in SCENE_ORDER]
    subject = canonical_phrase("subject", spec.subject, lang)
    if lang == "en":
        return ", ".join([f"{_article(subject)} {subject}", *parts])
    return "，".join([subject, *parts])
