"""Turn raw LLM text into a valid prompt, and say what makes a prompt invalid.

LLM output is cut to its first paragraph, split into tags, cleaned (quotes, bullets, labels, non-English text,
over-long or repeated tags dropped, brackets balanced, weights clamped to 0.5–1.6) and capped. When the rules
strategy read attributes from the intent, they are guarded: an LLM tag that contradicts one (``sunset`` for an
intent that said night) goes, and a missing one is put first — small models drift, the user's words do not.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from imageloop.prompts.lexicon import Lexicon, WeightedTag, normalise_text, parse_tag
from imageloop.prompts.usual import split_tags
from imageloop.prompts.weights import parse_weights

__all__ = ["MAX_TAGS", "clean_llm_output", "prompt_problems"]

MAX_TAGS = 12
MAX_TAG_WORDS = 6
MIN_WEIGHT, MAX_WEIGHT = 0.5, 1.6
_LABEL = re.compile(r"^\s*(?:tags?|prompt|answer|output|assistant)\s*:\s*", re.IGNORECASE)
_EDGE_JUNK = re.compile(r"^[\s\"'`*\-•#\d.)]+|[\s\"'`*.;!]+$")
_ASCII_TAG = re.compile(r"^[a-z0-9 ()\[\]:.,'&/-]+$")


def _candidates(text: str) -> list[str]:
    first = re.split(r"\n\s*\n|<\|", text.strip(), maxsplit=1)[0]
    first = _LABEL.sub("", first)
    return [part for part in re.split(r"[,\n;，、]+", first) if part.strip()]


def _clean_tag(raw: str) -> WeightedTag | None:
    text = _EDGE_JUNK.sub("", normalise_text(raw))
    if text.count("(") != text.count(")"):
        text = re.sub(r":\s*[0-9.]*$", "", text.replace("(", "").replace(")", "")).strip()
    if text.count("[") != text.count("]"):
        text = text.replace("[", "").replace("]", "").strip()
    tag = parse_tag(text)
    body = tag.text.replace("(", "").replace(")", "").strip()
    if not body or not _ASCII_TAG.match(body) or not re.search(r"[a-z]", body):
        return None
    if len(body.split()) > MAX_TAG_WORDS:
        return None
    return WeightedTag(body, round(min(max(tag.weight, MIN_WEIGHT), MAX_WEIGHT), 2))


def clean_llm_output(text: str, lexicon: Lexicon, guard: Mapping[str, str] | None = None) -> str:
    """A clean comma-separated prompt from LLM ``text`` ('' when none of its tags is usable).

    ``guard`` maps attribute → value key that must win (from the rules reading of the intent).
    """
    guard = dict(guard or {})
    kept: list[WeightedTag] = []
    seen: set[str] = set()
    heads: dict[str, int] = {}
    present: set[str] = set()
    for raw in _candidates(text):
        tag = _clean_tag(raw)
        if tag is None or tag.text in seen:
            continue
        head = tag.text.split()[0]
        if heads.get(head, 0) >= 2:  # "snowy scene, snowy landscape, snowy terrain...": a loop, not content
            continue
        value = lexicon.value_of(tag.text)
        if value is not None and guard.get(value[0], value[1]) != value[1]:
            continue
        if value is not None:
            present.add(value[0])
        seen.add(tag.text)
        heads[head] = heads.get(head, 0) + 1
        kept.append(tag)
    missing = [WeightedTag(lexicon.canonical(a, k)) for a, k in guard.items() if a not in present]
    tags = (missing + kept)[:MAX_TAGS] if kept else []  # nothing from the model: not an LLM expansion
    return ", ".join(tag.render() for tag in tags)


def prompt_problems(prompt: str) -> list[str]:
    """Why ``prompt`` is not a valid prompt (empty list = valid): empty, unbalanced brackets, weights outside
    0–2, no English word, too many, too long or repeated tags."""
    problems = []
    if not prompt.strip():
        return ["empty"]
    if prompt.count("(") != prompt.count(")") or prompt.count("[") != prompt.count("]"):
        problems.append("unbalanced brackets")
    weights = [w for text, w in parse_weights(prompt) if text.strip() and text != "BREAK"]
    if any(not 0.0 <= w <= 2.0 for w in weights):
        problems.append("weight outside 0-2")
    if not re.search(r"[A-Za-z]", prompt):
        problems.append("no English word")
    tags = [normalise_text(parse_tag(t).text) for t in split_tags(prompt)]
    if len(tags) > 3 * MAX_TAGS:
        problems.append("too many tags")
    if any(len(t.split()) > 3 * MAX_TAG_WORDS for t in tags):
        problems.append("a tag is a sentence")
    if len(set(tags)) < len(tags):
        problems.append("repeated tags")
    return problems
