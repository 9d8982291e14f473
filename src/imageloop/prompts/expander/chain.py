"""The chain: strategies tried in order (settings), "the usual" from memory, personal re-ranking, logging.

1. An empty intent is an :class:`InvalidRequestError` naming ``intent``.
2. "the usual" / "same as last time" (EN/ZH) recall the user's favourites from memory (strategy ``memory``); with no
   history that is an InvalidRequestError saying so plainly.
3. Otherwise each strategy runs in turn; one that declines (None), fails (StrategyFailed, an Imageloop error or any
   exception) or overruns its time passes to the next; the rules strategy ends every chain, so there is always an
   answer. ``details["attempts"]`` says what happened to each.
4. With personalisation on and enough kept history, the winning expansion and its alternatives are re-ranked toward
   the user's taste (``details["personalized"]``).
5. Whatever strategy answered, :func:`~imageloop.prompts.expander.guard.keep_intent` keeps the intent: the person's
   words (translated for Chinese) are all in the prompt, nothing contradicts them, added tags are real words, and
   each tag's origin is in ``details["provenance"]``.
6. With personalisation on, attributes the intent leaves open are set to the user's habitual values, read from the
   values they added in their own edits and kept (``details["personal_values"]``); the intent's words always win.
7. No term ends in both prompts (:func:`~imageloop.prompts.expander.guard.separate`), "the usual" included.
Every expansion is logged with its strategy and version.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from imageloop.errors import ImageloopError, InvalidRequestError
from imageloop.prompts.expander._common import Expander, Expansion, Recall, Stopwatch, StrategyFailed
from imageloop.prompts.expander.guard import keep_intent, provenance_of, separate
from imageloop.prompts.expander.rules import RulesExpander, ScenePlan, plan_scene, render
from imageloop.prompts.language import Language, resolve_language
from imageloop.prompts.lexicon import Lexicon, load_lexicon
from imageloop.prompts.memory import PromptMemory
from imageloop.prompts.personalize import apply_personal_values, personal_values, rerank, taste_from_history
from imageloop.prompts.usual import Favourites, UsualKind, favourites, last_time, split_tags, usual_request

__all__ = ["MEMORY_VERSION", "ChainExpander"]

log = logging.getLogger(__name__)
MEMORY_VERSION = "memory-1"
HISTORY_WINDOW = 50  # kept generations read for favourites and taste


class ChainExpander(Expander):
    """Runs ``strategies`` in order with the rules strategy as the last resort."""

    name = "chain"

    def __init__(
        self,
        strategies: Sequence[Expander],
        *,
        memory: PromptMemory | None = None,
        lexicon: Lexicon | None = None,
        personalization: bool = True,
        min_kept: int = 5,
        min_evidence: int = 2,
    ) -> None:
        self.lexicon = lexicon or load_lexicon()
        self.rules = next((s for s in strategies if isinstance(s, RulesExpander)), RulesExpander(self.lexicon))
        self.strategies = [s for s in strategies if not isinstance(s, RulesExpander)] + [self.rules]
        self.memory = memory
        self.personalization = personalization
        self.min_kept = min_kept
        self.min_evidence = min_evidence
        self._outcomes: Counter[tuple[str, str]] = Counter()
        self._outcomes_lock = threading.Lock()

    @property
    def version(self) -> str:
        return "chain(" + ",".join(f"{s.name}={s.version}" for s in self.strategies) + ")"

    def expand(self, intent: str, *, user: str | None = None, language: Language | None = None) -> Expansion:
        """The best expansion of ``intent`` for ``user``; raises InvalidRequestError for an empty intent or "the
        usual" without history."""
        watch = Stopwatch()
        if not intent or not intent.strip():
            raise InvalidRequestError("intent", "is empty; describe the picture you want")
        lang = resolve_language(intent, language)
        usual = usual_request(intent)
        if usual is not None:
            result = self._recall(usual[0], usual[1], user=user, language=lang)
        else:
            plan = plan_scene(intent, self.lexicon, lang)
            result = self._first_answer(intent, user=user, language=lang)
            personal = self.personalization and self.memory is not None and bool(user)
            kept: list[str] = []
            if personal and self.memory is not None and user:
                kept = [e.final_prompt for e in self.memory.entries(user, limit=HISTORY_WINDOW)]
                result = self._personalize(result, user, kept)
            result = self._keep_intent(result, intent, plan, user=user, language=lang)
            if personal and user:
                result = self._apply_habits(result, plan, user, kept)
            result = separate(result, plan.negatives)
        result = result.with_latency(watch.seconds)
        log.info("expanded intent with %s %s in %.3f s", result.strategy, result.version, result.latency)
        return result

    def _first_answer(self, intent: str, *, user: str | None, language: Language) -> Expansion:
        attempts: list[dict[str, Any]] = []
        for strategy in self.strategies:
            step = Stopwatch()
            try:
                result = strategy.expand(intent, user=user, language=language)
            except (StrategyFailed, ImageloopError) as exc:
                attempts.append({"strategy": strategy.name, "outcome": "failed", "error": str(exc)})
                self._count(strategy.name, "failed")
                log.warning("expander %s failed: %s", strategy.name, exc)
                continue
            except Exception as exc:  # a broken strategy must not take the request down: the rules still answer
                error = f"{type(exc).__name__}: {exc}"
                attempts.append({"strategy": strategy.name, "outcome": "failed", "error": error})
                self._count(strategy.name, "failed")
                log.exception("expander %s crashed", strategy.name)
                continue
            if result is None:
                attempts.append({"strategy": strategy.name, "outcome": "declined", "seconds": round(step.seconds, 4)})
                self._count(strategy.name, "declined")
                continue
            attempts.append({"strategy": strategy.name, "outcome": "used", "seconds": round(step.seconds, 4)})
            self._count(strategy.name, "used")
            return replace(result, details={**result.details, "attempts": attempts})
        raise AssertionError("the rules strategy always answers")  # pragma: no cover

    def outcomes(self) -> dict[tuple[str, str], int]:
        """(strategy, outcome) → count since start: used, declined, failed, and ``rejected`` for an answer whose
        every added tag failed the intent checks (the rules strategy then answers)."""
        with self._outcomes_lock:
            return dict(self._outcomes)

    def _count(self, strategy: str, outcome: str) -> None:
        with self._outcomes_lock:
            self._outcomes[(strategy, outcome)] += 1

    def _keep_intent(self, result: Expansion, intent: str, plan: ScenePlan, *, user: str | None,
                     language: Language) -> Expansion:
        """``result`` checked against the intent; an answer none of whose added tags passes the checks is rejected
        (counted) and the rules strategy answers instead, as if the strategy had failed."""
        kept = keep_intent(result, intent=intent, own=plan.own_tags(self.lexicon), stated=plan.stated(),
                           negatives=plan.negatives, lexicon=self.lexicon)
        if result.strategy == self.rules.name:
            return kept
        added = any(p["added"] for p in kept.details.get("provenance", []))
        if added or not kept.details.get("dropped"):
            return kept
        self._count(result.strategy, "rejected")
        rules = self.rules.expand(intent, user=user, language=language)
        attempts = [*result.details.get("attempts", []),
                    {"strategy": result.strategy, "outcome": "rejected", "dropped": kept.details["dropped"]}]
        fallback = replace(rules, details={**rules.details, "attempts": attempts})
        return keep_intent(fallback, intent=intent, own=plan.own_tags(self.lexicon), stated=plan.stated(),
                           negatives=plan.negatives, lexicon=self.lexicon)

    def _personalize(self, result: Expansion, user: str, kept: list[str]) -> Expansion:
        """Re-rank toward the taste of ``user``'s ``kept`` final prompts (newest first)."""
        assert self.memory is not None
        if not result.alternatives:
            return result
        vectors = self.memory.prompt_vectors(user, limit=HISTORY_WINDOW)
        taste = taste_from_history(kept, vectors, self.lexicon, min_kept=self.min_kept)
        if taste is None:
            return result
        candidates = [result.prompt, *result.alternatives]
        ranked = rerank(candidates, self.memory.embed(candidates), taste, self.lexicon)
        details = {**result.details, "personalized": {
            "kept": taste.kept, "chosen": ranked[0].prompt, "changed": ranked[0].prompt != result.prompt,
            "scores": [{"prompt": r.prompt, "score": round(r.score, 4)} for r in ranked],
        }}
        return replace(result, prompt=ranked[0].prompt, alternatives=tuple(r.prompt for r in ranked[1:]),
                       details=details)

    def _apply_habits(self, result: Expansion, plan: ScenePlan, user: str, kept: list[str]) -> Expansion:
        """Fill what the intent (read as ``plan``, and as a trained expander read it: :func:`learned_meaning`)
        leaves open with ``user``'s habits (from ``kept`` prompts and their edits)."""
        assert self.memory is not None
        values = personal_values(kept, self.memory.edits(user, limit=HISTORY_WINDOW), self.lexicon,
                                 min_evidence=self.min_evidence)
        stated = set(plan.values) | learned_meaning(result, self.lexicon)
        prompt, applied = apply_personal_values(result.prompt, values, stated=stated, negative=result.negative,
                                                lexicon=self.lexicon)
        if not applied:
            return result
        details = {**result.details, "personal_values": {
            "applied": {v.attribute: v.key for v in applied}, "before": result.prompt,
            "evidence": {v.attribute: {"key": v.key, "signs": v.evidence, "share": v.share} for v in values.values()},
        }, "provenance": provenance_of(prompt, result.details.get("provenance", []), "personal_value")}
        return replace(result, prompt=prompt, details=details)

    def _recall(self, kind: UsualKind, remainder: str, *, user: str | None, language: Language) -> Expansion:
        if user is None or self.memory is None:
            raise InvalidRequestError("intent", "'the usual' needs a signed-in user with kept images")
        entries = self.memory.entries(user, limit=HISTORY_WINDOW)
        recalled = (favourites if kind is UsualKind.USUAL else last_time)(entries, self.lexicon)
        if recalled is None:
            raise InvalidRequestError(
                "intent", "you have no kept images yet, so there is no 'usual' to repeat: like, download or share "
                "an image first, or describe the picture you want",
            )
        prompt = self._merge_remainder(recalled, remainder, language)
        plan = plan_scene(remainder, self.lexicon, language) if remainder else None
        result = Expansion(
            prompt=prompt, negative=recalled.negative, strategy="memory", version=MEMORY_VERSION, language=language,
            details={"kind": kind.value, "remainder": remainder, "lighting": list(recalled.lighting),
                     "based_on": recalled.based_on},
            recall=Recall(params=dict(recalled.params), recipe=recalled.recipe, style=recalled.style,
                          source_generation_ids=recalled.source_generation_ids),
        )
        negated = plan.negatives if plan is not None else []
        negative = ", ".join(dict.fromkeys([*(t.strip() for t in (recalled.negative or "").split(",") if t.strip()),
                                            *negated])) or None
        result = replace(result, negative=negative,
                         details={**result.details, "provenance": provenance_of(prompt, [], "memory")})
        return separate(result, negated)

    def _merge_remainder(self, recalled: Favourites, remainder: str, language: Language) -> str:
        """The recalled prompt with what the user added on top ("but at night") replacing the same attributes."""
        if not remainder:
            return recalled.prompt
        plan = plan_scene(remainder, self.lexicon, language)
        if plan.is_empty:
            return recalled.prompt
        kept = [t for t in split_tags(recalled.prompt) if (self.lexicon.value_of(t) or ("", ""))[0] not in plan.values]
        return ", ".join([render(plan, self.lexicon), *kept])


def learned_meaning(result: Expansion, lexicon: Lexicon) -> set[str]:
    """The attributes that what the community taught the system added to the intent: a trained expander adapter's
    additions (what "goblin mode" means, learned from the words people added after it) or the tags retrieval
    reused because several people kept them for a near-identical intent. They count as stated, so a person's habits
    fill only what the intent leaves open and never overwrite its meaning. The untrained base model's additions do
    not count (its style tags are guesses), nor the user's own reused prompt (their habits speak for it)."""
    if result.strategy == "local_llm" and not str(result.version).endswith("+base"):
        source = "local_llm"
    elif result.strategy == "retrieval" and result.details.get("reused") == "community":
        source = "retrieval"
    else:
        return set()
    # The tags the guard let through (provenance), else what the strategy added.
    provenance = result.details.get("provenance")
    if provenance is not None:
        added = [str(p["tag"]) for p in provenance if p.get("added") and p.get("source") == source]
    else:
        added = [str(tag) for tag in result.details.get("added", [])] if source == "local_llm" else \
            split_tags(result.prompt)
    return set(lexicon.attributes_in(", ".join(added))) if added else set()
