"""The chat messages both LLM strategies send: a system prompt naming the vocabulary, few-shot examples, the intent.

Examples come from the kept record (retrieval) when it has similar intents, else from a small built-in set; the
user message carries the intent and, when the rules strategy recognised words in it, those as English keywords
(the 135M local model barely reads Chinese: the keywords carry the meaning).
"""

from __future__ import annotations

from collections.abc import Sequence

from imageloop.prompts.expander._common import KeptExample
from imageloop.prompts.lexicon import Lexicon

__all__ = ["SEED_EXAMPLES", "build_messages", "system_prompt"]

SEED_EXAMPLES: tuple[KeptExample, ...] = (
    KeptExample("I want that really bleak feeling",
                "(monochrome:1.2), rain, city street, lonely figure, cinematic lighting, bleak", 0.0),
    KeptExample("a cozy evening at home", "small house, dusk, warm lighting, cozy", 0.0),
    KeptExample("a happy fox at the beach", "fox, beach, clear weather, day, cheerful", 0.0),
    KeptExample("雾里的森林，梦幻一点", "forest, fog, dreamy, soft light", 0.0),
)


def system_prompt(lexicon: Lexicon) -> str:
    """Instructions plus the scene words the embedded model knows (subjects are left out: any noun is fine)."""
    words = [lexicon.canonical(a, k) for a in lexicon.attributes if a != "subject" for k in lexicon.keys(a)]
    return (
        "You turn a wish for a picture into a short comma-separated list of English image tags. "
        f"Prefer these tags: {', '.join(words)}. Answer with tags only."
    )


def build_messages(
    intent: str, lexicon: Lexicon, examples: Sequence[KeptExample], keywords: Sequence[str] = ()
) -> list[dict[str, str]]:
    """OpenAI-style chat messages: system, example pairs (user intent → assistant tags), then the intent."""
    messages = [{"role": "system", "content": system_prompt(lexicon)}]
    for example in examples or SEED_EXAMPLES[:3]:
        messages.append({"role": "user", "content": example.intent})
        messages.append({"role": "assistant", "content": example.prompt})
    content = intent.strip()
    if keywords:
        content += f"\n(keywords: {', '.join(keywords)})"
    messages.append({"role": "user", "content": content})
    return messages
