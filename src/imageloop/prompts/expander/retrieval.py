"""The retrieval strategy: reuse what people kept for a near-identical intent, in any language.

Intents are embedded with the multilingual sentence encoder, so "想要那种很丧的感觉" finds a kept "I want that
really bleak feeling". Above ``threshold``:

- the user's own kept prompt for such an intent is reused as it is (their choice, their taste);
- other people's kept prompts are reused only for the tags at least ``min_users`` of them kept, and at least half of
  those above the threshold: what an intent means to the people who asked for it. One person's prompt also carries
  that person's taste ("sepia, snow"), which is noise to everyone else: reused whole, it contradicted what the next
  person wanted and their edits could not undo it (measured in the flywheel simulation).

Below it the strategy declines, and the same neighbours serve as few-shot examples for the LLMs.
"""

from __future__ import annotations

from collections.abc import Sequence

from imageloop.prompts.expander._common import ExampleSource, Expander, Expansion, KeptExample, Stopwatch
from imageloop.prompts.language import Language, resolve_language
from imageloop.prompts.lexicon import normalise_text, parse_tag
from imageloop.prompts.memory import PromptMemory
from imageloop.prompts.usual import split_tags

__all__ = ["MIN_EXAMPLE_SIMILARITY", "RETRIEVAL_VERSION", "RetrievalExpander", "agreed_tags"]

RETRIEVAL_VERSION = "retrieval-2"
MIN_EXAMPLE_SIMILARITY = 0.3  # below this a kept pair says nothing about the intent (unrelated pairs score ~0.2)


class RetrievalExpander(Expander, ExampleSource):
    """Nearest kept intents from :class:`PromptMemory`: reuse above ``threshold``, examples otherwise."""

    name = "retrieval"

    def __init__(self, memory: PromptMemory, *, threshold: float, min_users: int = 2) -> None:
        self.memory = memory
        self.threshold = threshold
        self.min_users = min_users

    @property
    def version(self) -> str:
        return f"{RETRIEVAL_VERSION}+{self.memory.embedder.name}"

    def expand(self, intent: str, *, user: str | None = None, language: Language | None = None) -> Expansion | None:
        """The user's own kept prompt for a near-identical intent, else the tags other people agree on for it;
        None when neither exists."""
        watch = Stopwatch()
        hits = self.memory.similar_kept(intent, k=8, user_id=user)
        reusable = [hit for hit in hits if hit.similarity >= self.threshold]
        own = [hit for hit in reusable if user is not None and hit.user_id == user]
        if own:
            prompt, alternatives, source = own[0].prompt, tuple(hit.prompt for hit in own[1:]), "own"
        else:
            tags = agreed_tags([hit for hit in reusable if hit.user_id != user], min_users=self.min_users)
            if not tags:
                return None
            prompt, alternatives, source = ", ".join(tags), (), "community"
        return Expansion(
            prompt=prompt, negative=None, strategy=self.name, version=self.version,
            language=resolve_language(intent, language), latency=watch.seconds,
            details={"reused": source, "neighbours": [
                {"intent": h.intent, "prompt": h.prompt, "similarity": round(h.similarity, 4),
                 "generation_id": h.generation_id, "own": user is not None and h.user_id == user} for h in hits
            ]},
            alternatives=alternatives,
        )

    def examples(self, intent: str, *, k: int) -> list[KeptExample]:
        """Up to ``k`` kept pairs at least :data:`MIN_EXAMPLE_SIMILARITY` similar to ``intent``."""
        if k <= 0:
            return []
        return [hit for hit in self.memory.similar_kept(intent, k=k) if hit.similarity >= MIN_EXAMPLE_SIMILARITY]


def agreed_tags(hits: Sequence[KeptExample], *, min_users: int) -> list[str]:
    """The tags (as the most similar hit writes them, in its order) that at least ``min_users`` distinct people
    kept among ``hits`` and at least half of those people did; [] with fewer than ``min_users`` people."""
    people: dict[str, set[str]] = {}
    for hit in hits:
        person = hit.user_id or hit.generation_id or hit.prompt
        people.setdefault(person, set()).update(_key(tag) for tag in split_tags(hit.prompt))
    if len(people) < min_users:
        return []
    counts: dict[str, int] = {}
    for tags in people.values():
        for key in tags:
            counts[key] = counts.get(key, 0) + 1
    agreed = {key for key, n in counts.items() if n >= min_users and 2 * n >= len(people)}
    out: dict[str, str] = {}
    for hit in hits:  # best first: the best hit's way of writing a tag wins
        for tag in split_tags(hit.prompt):
            key = _key(tag)
            if key in agreed and key not in out:
                out[key] = tag
    return list(out.values())


def _key(tag: str) -> str:
    return normalise_text(parse_tag(tag).text)
