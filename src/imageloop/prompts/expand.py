"""Intent → final prompt. For now a passthrough; the LLM expander replaces the body of :func:`resolve_prompt`.

Every generation records which strategy and version produced its final prompt, so datasets can tell the
passthrough rows apart from expanded ones once the expander lands.
"""

from __future__ import annotations

from dataclasses import dataclass

from imageloop.errors import InvalidRequestError

PASSTHROUGH_STRATEGY = "passthrough"
PASSTHROUGH_VERSION = "0"


@dataclass(frozen=True, slots=True)
class ResolvedPrompt:
    """The prompt a generation runs with, and what produced it."""

    final_prompt: str
    negative_prompt: str | None
    strategy: str
    version: str
    language: str | None = None


def resolve_prompt(
    *, intent: str | None, prompt: str | None, negative_prompt: str | None = None, language: str | None = None
) -> ResolvedPrompt:
    """The final prompt for a request: the explicit ``prompt`` when given, else the ``intent`` text unchanged.

    Raises InvalidRequestError naming ``intent`` when both are empty. The negative prompt passes through.
    """
    for text in (prompt, intent):
        if text is not None and text.strip():
            return ResolvedPrompt(
                final_prompt=text,
                negative_prompt=negative_prompt,
                strategy=PASSTHROUGH_STRATEGY,
                version=PASSTHROUGH_VERSION,
                language=language,
            )
    raise InvalidRequestError("intent", "give an intent or a prompt (both are empty)")
