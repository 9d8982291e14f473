"""The retrieval strategy: reuse the final prompt someone kept for a near-identical intent, in any language.

Intents are embedded with the multilingual sentence encoder, so "想要那种很丧的感觉" finds a kept "I want that
really bleak feeling". Above ``threshold`` the best kept prompt is reused as it is (the others above it become
alternatives); below it the strategy declines, and the same neighbours serve as few-shot examples for the LLMs.
"""

from __future__ import annotations

from imageloop.prompts.expander._common import ExampleSource, Expander, Expansion, KeptExample, Stopwatch
from imageloop.prompts.language import Language, resolve_language
from imageloop.prompts.memory import PromptMemory

__all__ = ["MIN_EXAMPLE_SIMILARITY", "RETRIEVAL_VERSION", "RetrievalExpander"]

RETRIEVAL_VERSION = "retrieval-1"
MIN_EXAMPLE_SIMILARITY = 0.3  # below this a kept pair says nothing about the intent (unrelated pairs score ~0.2)


class RetrievalExpander(Expander, ExampleSource):
    """Nearest kept intents from :class:`PromptMemory`: direct reuse above ``threshold``, examples otherwise."""

    name = "retrieval"

    def __init__(self, memory: PromptMemory, *, threshold: float) -> None:
        self.memory = memory
        self.threshold = threshold

    @property
    def version(self) -> str:
        return f"{RETRIEVAL_VERSION}+{self.memory.embedder.name}"

    def expand(self, intent: str, *, user: str | None = None, language: Language | None = None) -> Expansion | None:
        """The best kept prompt when its intent is at least ``threshold`` similar; None otherwise."""
        watch = Stopwatch()
        hits = self.memory.similar_kept(intent, k=5, user_id=user)
        reusable = [hit for hit in hits if hit.similarity >= self.threshold]
        if not reusable:
            return None
        best = reusable[0]
        return Expansion(
            prompt=best.prompt, negative=None, strategy=self.name, version=self.version,
            language=resolve_language(intent, language), latency=watch.seconds,
            details={"neighbours": [
                {"intent": h.intent, "prompt": h.prompt, "similarity": round(h.similarity, 4),
                 "generation_id": h.generation_id} for h in hits
            ]},
            alternatives=tuple(hit.prompt for hit in reusable[1:]),
        )

    def examples(self, intent: str, *, k: int) -> list[KeptExample]:
        """Up to ``k`` kept pairs at least :data:`MIN_EXAMPLE_SIMILARITY` similar to ``intent``."""
        if k <= 0:
            return []
        return [hit for hit in self.memory.similar_kept(intent, k=k) if hit.similarity >= MIN_EXAMPLE_SIMILARITY]
