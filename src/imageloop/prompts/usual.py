""""The usual" and "same as last time": recall a user's favourite settings from their kept generations.

:func:`usual_request` recognises the request (EN and ZH, with anything else the user wrote kept as a remainder:
"the usual, but at night"). :func:`favourites` reads the user's remembered generations (newest first) into their
favourite tags — lighting tokens first among them — recipe, style, CFG, size, steps and sampler; "same as last time"
(:func:`last_time`) takes the most recent kept generation as it was. Both are pure functions of the entries.
"""

from __future__ import annotations

import enum
import math
import re
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from imageloop.prompts.lexicon import Lexicon, normalise_text, parse_tag
from imageloop.storage.vectors import MemoryEntry

__all__ = ["Favourites", "UsualKind", "favourites", "last_time", "split_tags", "usual_request"]


class UsualKind(enum.StrEnum):
    USUAL = "usual"  # favourites over the user's kept history
    LAST = "last"  # the most recent kept generation


_PHRASES: dict[str, UsualKind] = {
    **dict.fromkeys(("the usual", "my usual", "as usual", "usual one", "the regular", "my regular",
                     "老规矩", "老样子", "照常", "还是那样", "常用的", "惯例"), UsualKind.USUAL),
    **dict.fromkeys(("same as last time", "same as before", "like last time", "like before", "same again",
                     "same as the last one", "one more like the last", "照旧", "和上次一样", "跟上次一样",
                     "同上次", "像上次那样", "上次那样", "和之前一样", "跟之前一样", "再来一张一样的"), UsualKind.LAST),
}
_FILLER = re.compile(
    r"\b(?:please|pls|give me|make me|i want|i'd like|again|one|just|but|with|and|another)\b"
    r"|请|给我|帮我|来个|来一张|再来|一张|就|吧|啊|呀|嘛|但是|不过|要",
)
_LIGHT_WORDS = ("light", "glow", "lit", "光")
MIN_SHARE = 0.4  # a tag is a favourite when it is in this share of kept prompts (and in at least two)
MAX_FAVOURITE_TAGS = 10


@dataclass(frozen=True, slots=True)
class Favourites:
    """What a user's history recalls: a prompt, its negative, the lighting tokens in it and request settings."""

    prompt: str
    negative: str | None
    lighting: tuple[str, ...]
    recipe: str | None
    style: str | None
    params: dict[str, Any] = field(default_factory=dict)
    based_on: int = 0
    source_generation_ids: tuple[str, ...] = ()


def usual_request(intent: str) -> tuple[UsualKind, str] | None:
    """``(kind, remainder)`` when ``intent`` asks for the usual or the same as last time, else None.

    The remainder is what else the user asked for ("at night" in "the usual but at night"), fillers removed.
    """
    norm = normalise_text(intent)
    for phrase in sorted(_PHRASES, key=len, reverse=True):
        ascii_phrase = phrase.isascii()
        pattern = rf"(?<![a-z]){re.escape(phrase)}(?![a-z])" if ascii_phrase else re.escape(phrase)
        found = re.search(pattern, norm)
        if found is None:
            continue
        rest = norm[: found.start()] + " " + norm[found.end() :]
        rest = _FILLER.sub(" ", rest)
        rest = re.sub(r"[\s,，。.!！?？、;；:：]+", " ", rest).strip()
        return _PHRASES[phrase], rest
    return None


def split_tags(prompt: str) -> list[str]:
    """Top-level comma-separated tags of a prompt (commas inside brackets do not split)."""
    tags: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in prompt:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth = max(0, depth - 1)
        if ch in ",，" and depth == 0:
            tags.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    tags.append("".join(current).strip())
    return [t for t in tags if t]


def _mode(values: Sequence[Any]) -> Any:
    # Most common, ties broken by recency (entries are newest first, Counter keeps first-seen order).
    return Counter(values).most_common(1)[0][0] if values else None


def _params(entries: Sequence[MemoryEntry]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cfgs = [float(e.params["guidance_scale"]) for e in entries if e.params.get("guidance_scale") is not None]
    if cfgs:
        out["guidance_scale"] = round(statistics.median(cfgs) * 2) / 2
    sizes = [(e.params["width"], e.params["height"])
             for e in entries if e.params.get("width") and e.params.get("height")]
    if sizes:
        out["width"], out["height"] = _mode(sizes)
    for name in ("steps", "scheduler"):
        values = [e.params[name] for e in entries if e.params.get(name) is not None]
        if values:
            out[name] = _mode(values)
    return out


def _favourite_tags(entries: Sequence[MemoryEntry], lexicon: Lexicon) -> list[str]:
    counts: Counter[str] = Counter()
    spelling: dict[str, str] = {}
    for entry in entries:
        for tag in dict.fromkeys(split_tags(entry.final_prompt)):
            key = normalise_text(parse_tag(tag).text)
            counts[key] += 1
            spelling.setdefault(key, tag)
    needed = max(2, math.ceil(MIN_SHARE * len(entries))) if len(entries) > 1 else 1
    chosen: list[str] = []
    taken_attributes: set[str] = set()
    for key, count in counts.most_common():
        if count < needed or len(chosen) >= MAX_FAVOURITE_TAGS:
            break
        value = lexicon.value_of(key)
        if value is not None:
            if value[0] in taken_attributes:  # one value per attribute: the most frequent
                continue
            taken_attributes.add(value[0])
        chosen.append(spelling[key])
    return chosen


def _is_lighting(tag: str, lexicon: Lexicon) -> bool:
    value = lexicon.value_of(tag)
    if value is not None:
        return value[0] == "lighting"
    text = normalise_text(parse_tag(tag).text)
    return any(word in text for word in _LIGHT_WORDS)


def favourites(entries: Sequence[MemoryEntry], lexicon: Lexicon) -> Favourites | None:
    """The user's favourites over ``entries`` (newest first); None without entries."""
    if not entries:
        return None
    tags = _favourite_tags(entries, lexicon) or split_tags(entries[0].final_prompt)
    lighting = [t for t in tags if _is_lighting(t, lexicon)]
    tags = lighting + [t for t in tags if t not in lighting]  # lighting first: what users mean by their look
    negatives = [e.negative_prompt for e in entries if e.negative_prompt]
    return Favourites(
        prompt=", ".join(tags), negative=_mode(negatives), lighting=tuple(lighting),
        recipe=_mode([e.recipe for e in entries if e.recipe]), style=_mode([e.style for e in entries if e.style]),
        params=_params(entries), based_on=len(entries),
        source_generation_ids=tuple(e.generation_id for e in entries),
    )


def last_time(entries: Sequence[MemoryEntry], lexicon: Lexicon) -> Favourites | None:
    """The most recent kept generation as it was; None without entries."""
    if not entries:
        return None
    last = entries[0]
    tags = split_tags(last.final_prompt)
    params = {k: v for k, v in last.params.items() if k in ("guidance_scale", "width", "height", "steps", "scheduler")}
    return Favourites(
        prompt=last.final_prompt, negative=last.negative_prompt,
        lighting=tuple(t for t in tags if _is_lighting(t, lexicon)), recipe=last.recipe, style=last.style,
        params=params, based_on=1, source_generation_ids=(last.generation_id,),
    )
