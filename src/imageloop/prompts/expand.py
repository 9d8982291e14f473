"""Intent → final prompt for a generation: the explicit prompt when there is one, else the intent expanded.

Every generation records which strategy and version produced its final prompt, so datasets can tell them apart:
``passthrough`` (an explicit prompt, used as written), or an expander strategy (``rules``, ``retrieval``,
``local_llm``, ``remote_llm``, ``memory``) with its version. Without a :class:`~imageloop.prompts.service.PromptService`
the rules strategy expands (pure, no model, no database); with one, the configured chain does.

A prompt is resolved once, at submit (or when the user previews it), and stored with the generation as a
:class:`~imageloop.storage.Expansion` (:func:`expansion_record`); ``details`` are made JSON-safe and bounded
(:func:`json_details`) on the way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

from imageloop.errors import InvalidRequestError
from imageloop.storage import Expansion

if TYPE_CHECKING:
    from imageloop.prompts.expander import Expander, Recall
    from imageloop.prompts.service import PromptService

PASSTHROUGH_STRATEGY = "passthrough"
PASSTHROUGH_VERSION = "0"
# Bounds of stored and served expansion details: the whole object as JSON, one string, one list, nesting.
MAX_DETAILS_CHARS = 16_000
MAX_DETAIL_STRING = 1_000
MAX_DETAIL_ITEMS = 200
MAX_DETAIL_DEPTH = 6
# Kept first when the details are too big: what the page shows per word.
_ESSENTIAL_DETAILS = ("provenance", "personal_values")


@dataclass(frozen=True, slots=True)
class ResolvedPrompt:
    """The prompt a generation runs with, and what produced it (``details``/``recall`` from the expander)."""

    final_prompt: str
    negative_prompt: str | None
    strategy: str
    version: str
    language: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    recall: Recall | None = None


@cache
def _rules() -> Expander:
    from imageloop.prompts.expander.rules import RulesExpander

    return RulesExpander()


def join_negatives(*parts: str | None) -> str | None:
    """Comma-separated negative terms of ``parts`` in order, each once (case-insensitive); None when empty."""
    terms: list[str] = []
    for part in parts:
        for term in (part or "").split(","):
            if term.strip() and term.strip().casefold() not in {t.casefold() for t in terms}:
                terms.append(term.strip())
    return ", ".join(terms) or None


def resolve_prompt(
    *,
    intent: str | None,
    prompt: str | None,
    negative_prompt: str | None = None,
    language: str | None = None,
    user_id: str | None = None,
    service: PromptService | None = None,
) -> ResolvedPrompt:
    """The final prompt for a request.

    An explicit ``prompt`` is used as written (strategy ``passthrough``). Otherwise ``intent`` is expanded for
    ``user_id`` by ``service`` (moderated, memory-aware, personalised) or, without one, by the rules strategy;
    the expansion's negative terms are added after ``negative_prompt``. Raises InvalidRequestError naming
    ``intent`` when both are empty, and whatever the service raises (ModerationError, InvalidRequestError for
    "the usual" without history).
    """
    if prompt is not None and prompt.strip():
        if service is not None:
            service.check_prompt(prompt)
        return ResolvedPrompt(prompt, negative_prompt, PASSTHROUGH_STRATEGY, PASSTHROUGH_VERSION, language)
    if intent is None or not intent.strip():
        raise InvalidRequestError("intent", "give an intent or a prompt (both are empty)")
    from imageloop.prompts.language import resolve_language

    given = resolve_language(intent, language)
    if service is not None:
        expansion = service.expand(intent, user=user_id, language=given)
    else:
        rules = _rules().expand(intent, user=user_id, language=given)
        assert rules is not None  # the rules strategy never declines
        expansion = rules
    return ResolvedPrompt(
        final_prompt=expansion.prompt,
        negative_prompt=join_negatives(negative_prompt, expansion.negative),
        strategy=expansion.strategy,
        version=expansion.version,
        language=language or expansion.language,
        details=expansion.details,
        recall=expansion.recall,
    )


def _json_value(value: Any, depth: int) -> Any:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value[:MAX_DETAIL_STRING]
    if depth >= MAX_DETAIL_DEPTH:
        return str(value)[:MAX_DETAIL_STRING]
    if isinstance(value, Mapping):
        items = list(value.items())[:MAX_DETAIL_ITEMS]
        return {str(key)[:MAX_DETAIL_STRING]: _json_value(item, depth + 1) for key, item in items}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_value(item, depth + 1) for item in list(value)[:MAX_DETAIL_ITEMS]]
    if hasattr(value, "item"):  # numpy and torch scalars
        return _json_value(value.item(), depth)
    return str(value)[:MAX_DETAIL_STRING]


def json_details(details: Mapping[str, Any], *, max_chars: int = MAX_DETAILS_CHARS) -> dict[str, Any]:
    """``details`` as plain JSON (str keys; lists, numbers, strings, None), each string, list and nesting level
    bounded, and the whole at most ``max_chars`` characters of JSON: when it is longer, only provenance and
    personal values are kept (if even they are too long, nothing), with ``"truncated": true``."""
    out: dict[str, Any] = _json_value(dict(details), 0)
    if len(json.dumps(out, ensure_ascii=False)) <= max_chars:
        return out
    essential = {key: out[key] for key in _ESSENTIAL_DETAILS if key in out}
    kept = {**essential, "truncated": True}
    return kept if len(json.dumps(kept, ensure_ascii=False)) <= max_chars else {"truncated": True}


def recall_json(recall: Recall | None) -> dict[str, Any] | None:
    """"The usual"'s recalled settings as stored JSON (None when the intent did not ask for them)."""
    if recall is None:
        return None
    return {"params": _json_value(dict(recall.params), 1), "recipe": recall.recipe, "style": recall.style,
            "source_generation_ids": list(recall.source_generation_ids)}


def recall_from_json(stored: Mapping[str, Any] | None) -> Recall | None:
    """Inverse of :func:`recall_json`."""
    if not stored:
        return None
    from imageloop.prompts.expander import Recall

    return Recall(params=dict(stored.get("params") or {}), recipe=stored.get("recipe"), style=stored.get("style"),
                  source_generation_ids=tuple(stored.get("source_generation_ids") or ()))


def expansion_record(resolved: ResolvedPrompt) -> Expansion:
    """``resolved`` as it is stored with a generation (or a preview): details JSON-safe and bounded."""
    return Expansion(
        final_prompt=resolved.final_prompt, negative_prompt=resolved.negative_prompt,
        expander_strategy=resolved.strategy, expander_version=resolved.version, intent_language=resolved.language,
        details=json_details(resolved.details), recall=recall_json(resolved.recall),
    )


def resolved_from_record(expansion: Expansion) -> ResolvedPrompt:
    """Inverse of :func:`expansion_record`: a stored expansion, to run or to show again."""
    return ResolvedPrompt(
        final_prompt=expansion.final_prompt, negative_prompt=expansion.negative_prompt,
        strategy=expansion.expander_strategy or PASSTHROUGH_STRATEGY,
        version=expansion.expander_version or PASSTHROUGH_VERSION, language=expansion.intent_language,
        details=dict(expansion.details), recall=recall_from_json(expansion.recall),
    )
