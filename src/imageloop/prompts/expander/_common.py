"""Types shared by every expansion strategy: the :class:`Expansion` result and the :class:`Expander` interface."""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field, replace
from typing import Any

from imageloop.prompts.language import Language

__all__ = ["ExampleSource", "Expander", "Expansion", "KeptExample", "Recall", "Stopwatch", "StrategyFailed"]


@dataclass(frozen=True, slots=True)
class Recall:
    """Settings recalled from a user's memory ("the usual"): fill these into the request where it left them open."""

    params: dict[str, Any] = field(default_factory=dict)  # guidance_scale, width, height, steps, scheduler
    recipe: str | None = None
    style: str | None = None
    source_generation_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Expansion:
    """What a strategy made of an intent.

    ``prompt`` is English tags in A1111 syntax, ``negative`` the negative prompt (None = none), ``strategy`` and
    ``version`` name what produced it (stored with the generation), ``language`` is the intent's language,
    ``latency`` the seconds it took, ``details`` strategy-specific facts for logs and the API (matched terms,
    neighbours, raw LLM text...). ``alternatives`` are other good prompts for the same intent, best first (the
    personal re-ranker may pick one of them); ``recall`` is set when the intent asked for "the usual".
    """

    prompt: str
    negative: str | None
    strategy: str
    version: str
    language: Language
    latency: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    alternatives: tuple[str, ...] = ()
    recall: Recall | None = None

    def with_latency(self, seconds: float) -> Expansion:
        """A copy with ``latency`` set."""
        return replace(self, latency=seconds)


@dataclass(frozen=True, slots=True)
class KeptExample:
    """A past intent whose final prompt a user kept, and how similar it is to the current intent."""

    intent: str
    prompt: str
    similarity: float
    generation_id: str | None = None
    language: str | None = None
    user_id: str | None = None


class ExampleSource(abc.ABC):
    """Where the LLM strategies get few-shot examples (the retrieval strategy over the kept record)."""

    @abc.abstractmethod
    def examples(self, intent: str, *, k: int) -> list[KeptExample]:
        """Up to ``k`` kept intent → prompt pairs, most similar to ``intent`` first."""


class StrategyFailed(Exception):
    """A strategy could not expand an intent (model missing, timeout, unusable output); the chain tries the next."""


class Expander(abc.ABC):
    """One expansion strategy. ``expand`` returns an :class:`Expansion`, or None when the strategy declines
    (e.g. retrieval finds nothing similar enough); it raises :class:`StrategyFailed` when it breaks."""

    name: str = "expander"

    @property
    @abc.abstractmethod
    def version(self) -> str:
        """Names the strategy's code, data and model version, e.g. ``rules-6+lexicon-1a2b3c4d``."""

    @abc.abstractmethod
    def expand(self, intent: str, *, user: str | None = None, language: Language | None = None) -> Expansion | None:
        """Expand ``intent`` for ``user`` (None = anonymous); ``language`` None means detect it."""


class Stopwatch:
    """Measures one expansion's latency."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start
