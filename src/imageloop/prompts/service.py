"""The one place the prompt side is wired from settings: memory, strategies, chain, moderation, recipes, checks.

Build one :class:`PromptService` per process (server start, worker start) and share it. The server calls
:meth:`PromptService.expand` (or :meth:`preview`) and :meth:`choose_recipe`; the worker calls
:func:`imageloop.prompts.expand.resolve_prompt` with it; the worker's image step uses :attr:`image_checker`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from imageloop.config import Settings
from imageloop.errors import ImageloopError
from imageloop.prompts.embeddings import TextEmbedder, default_embedder
from imageloop.prompts.expander._common import Expander, Expansion
from imageloop.prompts.expander.chain import ChainExpander
from imageloop.prompts.expander.local_llm import AdapterSource, LocalLLMExpander
from imageloop.prompts.expander.remote import RemoteLLMExpander
from imageloop.prompts.expander.retrieval import RetrievalExpander
from imageloop.prompts.expander.rules import RulesExpander
from imageloop.prompts.image_check import ImageChecker
from imageloop.prompts.language import Language
from imageloop.prompts.lexicon import load_lexicon
from imageloop.prompts.memory import PromptMemory
from imageloop.prompts.moderation import TextModerator
from imageloop.prompts.recipes import RecipeChoice, RecipeChooser
from imageloop.storage import Storage

__all__ = ["PromptService"]

log = logging.getLogger(__name__)


class PromptService:
    """Everything that turns an intent into a prompt for one process. ``storage`` None = rules only (no memory,
    retrieval, recipes); strategies that cannot be built (no remote URL) are left out with a warning. ``adapters``
    (the registry's ``ExpanderRouting``) picks the trained adapter the local LLM uses for each user."""

    def __init__(
        self,
        settings: Settings,
        storage: Storage | None = None,
        *,
        embedder: TextEmbedder | None = None,
        strategies: Iterable[Expander] | None = None,
        adapters: AdapterSource | None = None,
    ) -> None:
        self.settings = settings
        self.adapters = adapters
        config = settings.prompts
        self.lexicon = load_lexicon()
        self.moderator = TextModerator(config.moderation_extra_terms, enabled=config.moderation)
        self.image_checker = ImageChecker.from_settings(settings)
        self.memory = PromptMemory(storage, embedder or default_embedder()) if storage is not None else None
        self.recipes = (
            RecipeChooser(storage, thompson=config.thompson_sampling, prior_strength=config.thompson_prior_strength)
            if storage is not None else None
        )
        built = list(strategies) if strategies is not None else self._build_strategies()
        self.expander = ChainExpander(
            built, memory=self.memory, lexicon=self.lexicon, personalization=config.personalization,
            min_kept=config.personalization_min_kept, min_evidence=config.personal_values_min_evidence,
        )
        self._sync_lock = threading.Lock()
        self._synced_at = 0.0

    def _build_strategies(self) -> list[Expander]:
        config = self.settings.prompts
        retrieval = (
            RetrievalExpander(self.memory, threshold=config.retrieval_threshold,
                              min_users=config.retrieval_min_users) if self.memory is not None else None
        )
        out: list[Expander] = []
        for name in config.strategies:
            if name == "retrieval" and retrieval is not None:
                out.append(retrieval)
            elif name == "local_llm":
                out.append(LocalLLMExpander(self.settings, examples=retrieval, lexicon=self.lexicon,
                                            adapters=self.adapters))
            elif name == "remote_llm":
                if config.remote_url:
                    out.append(RemoteLLMExpander(self.settings, examples=retrieval, lexicon=self.lexicon))
                else:
                    log.warning("prompts.strategies names remote_llm but prompts.remote_url is not set; skipped")
            elif name == "rules":
                out.append(RulesExpander(self.lexicon))
        return out

    def sync_memory(self, *, force: bool = False) -> None:
        """Bring the memory up to date with kept actions (at most every ``prompts.memory_sync_seconds`` unless
        ``force``)."""
        if self.memory is None:
            return
        with self._sync_lock:
            if not force and time.monotonic() - self._synced_at < self.settings.prompts.memory_sync_seconds:
                return
            self._synced_at = time.monotonic()
        try:
            result = self.memory.sync()
            if result.added or result.removed:
                log.info("prompt memory: %d added, %d removed", result.added, result.removed)
        except ImageloopError as exc:  # a stale memory is better than a failed request
            log.warning("prompt memory sync failed: %s", exc)

    def expand(self, intent: str, *, user: str | None = None, language: Language | None = None) -> Expansion:
        """Moderate the intent, expand it (see :class:`ChainExpander`), moderate the result.

        Raises ModerationError (400) for a blocked intent or expansion, InvalidRequestError (422) for an empty
        intent or "the usual" without history.
        """
        self.moderator.check(intent, field="intent")
        self.sync_memory()
        expansion = self.expander.expand(intent, user=user, language=language)
        self.moderator.check(expansion.prompt, field="prompt")
        return expansion

    def check_prompt(self, prompt: str | None, *, field: str = "prompt") -> None:
        """Moderate an explicit prompt (ModerationError when blocked)."""
        self.moderator.check(prompt, field=field)

    def choose_recipe(self, candidates: Iterable[str], *, user: str | None) -> RecipeChoice | None:
        """Thompson-sample one of ``candidates`` for ``user``; None when there is no storage or no candidate."""
        names = list(candidates)
        if self.recipes is None or not names:
            return None
        return self.recipes.choose(names, user_id=user)

    def record_recipe_choice(self, generation_id: str, user: str, choice: RecipeChoice) -> None:
        """Log the choice (and its propensity) for the generation it was made for."""
        if self.recipes is not None:
            self.recipes.record(generation_id, user, choice)
