"""The chat messages the LLM strategies send.

The remote strategy sends :func:`build_messages`: a system prompt naming the vocabulary, few-shot examples, the
intent. The local strategy receives the intent already read into English tags ("little fox, rain, night") and only
adds a few enrichment tags (style, lighting, composition, detail); its messages are a constant prefix, whose
key/value state it computes once and reuses, plus :func:`user_message`. The base model needs few-shot examples to
answer with tags instead of prose (:func:`enrich_prefix`); a trained adapter is served in the format it was trained
on (:func:`adapter_prefix`: ``imageloop.training.expander.prompt_messages``, a one-line instruction).
"""

from __future__ import annotations

from collections.abc import Sequence

from imageloop.prompts.expander._common import KeptExample
from imageloop.prompts.lexicon import Lexicon

__all__ = [
    "ADAPTER_SYSTEM", "ENRICH_EXAMPLES", "ENRICH_SYSTEM", "MAX_ADDED_TAGS", "SEED_EXAMPLES", "adapter_prefix",
    "build_messages", "enrich_prefix", "system_prompt", "user_message",
]

Message = dict[str, str]
MAX_ADDED_TAGS = 6

SEED_EXAMPLES: tuple[KeptExample, ...] = (
    KeptExample("I want that really bleak feeling",
                "(monochrome:1.2), rain, city street, lonely figure, cinematic lighting, bleak", 0.0),
    KeptExample("a cozy evening at home", "small house, dusk, warm lighting, cozy", 0.0),
    KeptExample("a happy fox at the beach", "fox, beach, clear weather, day, cheerful", 0.0),
    KeptExample("雾里的森林，梦幻一点", "forest, fog, dreamy, soft light", 0.0),
)

ADAPTER_SYSTEM = "Add the image tags this wish means. Tags only."
ENRICH_SYSTEM = f"Add up to {MAX_ADDED_TAGS} new image tags (style, lighting, composition, detail). Tags only."
# Short answers that fit the scene they enrich: a 135M model copies the examples' shape and length closely, and
# copies their words when they fit anything, so none of them names a weather, time or place.
ENRICH_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("little fox, rain, night", "wet fur, soft rim light, reflections, close-up, detailed"),
    ("mountain, ink wash painting", "brush strokes, misty peaks, minimalist, wide shot"),
    ("cheerful penguin, beach", "playful, vibrant colors, sharp focus, full body"),
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
) -> list[Message]:
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


def enrich_prefix() -> list[Message]:
    """The base model's constant prefix: the enrichment instruction and the example pairs (English tags → added
    tags)."""
    messages = [{"role": "system", "content": ENRICH_SYSTEM}]
    for phrase, added in ENRICH_EXAMPLES:
        messages += [{"role": "user", "content": phrase}, {"role": "assistant", "content": added}]
    return messages


def adapter_prefix() -> list[Message]:
    """A trained adapter's constant prefix: the short instruction it was trained with, no examples and no word list
    (the adapter learned both from the record; every prompt token is paid for in each training step)."""
    return [{"role": "system", "content": ADAPTER_SYSTEM}]


def user_message(english_phrase: str) -> Message:
    """The per-request turn: the intent read into English tags."""
    return {"role": "user", "content": english_phrase.strip()}
