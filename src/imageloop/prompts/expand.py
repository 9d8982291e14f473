"""Intent → final prompt for a generation: the explicit prompt when there is one, else the intent expanded.

Every generation records which strategy and version produced its final prompt, so datasets can tell them apart:
``passthrough`` (an explicit prompt, used as written), or an expander strategy (``rules``, ``retrieval``,
``local_llm``, ``remote_llm``, ``memory``) with its version. Without a :class:`~imageloop.prompts.service.PromptService`
the rules strategy expands (pure, no model, no database); with one, the configured chain does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

from imageloop.errors import InvalidRequestError

if TYPE_CHECKING:
    from imageloop.prompts.expander import Expander, Recall
    from imageloop.prompts.service import PromptService

PASSTHROUGH_STRATEGY = "passthrough"
PASSTHROUGH_VERSION = "0"


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


def _join_negatives(*parts: str | None) -> str | None:
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
        negative_prompt=_join_negatives(negative_prompt, expansion.negative),
        strategy=expansion.strategy,
        version=expansion.version,
        language=language or expansion.language,
        details=expansion.details,
        recall=expansion.recall,
    )
