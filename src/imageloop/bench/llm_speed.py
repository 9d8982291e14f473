"""How fast the local LLM strategy completes: latency per completion once the model is loaded, with the token counts
that explain it (what ``imageloop bench expander`` reports for ``local_llm``).

This CPU may be shared: the result carries the load average at the start and the end, and a latency means something
only beside it.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

from imageloop.bench.stats import percentile
from imageloop.config import Settings
from imageloop.prompts.expander._common import StrategyFailed
from imageloop.prompts.expander.local_llm import LocalLLMExpander

__all__ = ["measure_llm_speed"]




def measure_llm_speed(
    settings: Settings, phrases: list[str], *, repeats: int, expander: LocalLLMExpander | None = None
) -> dict[str, Any]:
    """Complete each English ``phrase`` ``repeats`` times with the base model (loaded first, not timed with them).

    Returns ``p50_seconds`` and ``p95_seconds`` per completion, ``mean_prompt_tokens`` (the cached prefix included),
    ``mean_new_tokens``, ``tokens_per_second`` (new tokens over completion time), ``load_seconds`` (conversion on
    the first run ever, then loading), ``completions``, ``failures``, ``threads``, ``max_new_tokens`` (an
    adapter's cap), ``base_max_new_tokens`` (the base model's, which this measures) and
    ``load_average_start`` / ``load_average_end`` (1-minute). Pass ``expander`` to measure one already built
    (and maybe loaded: then ``load_seconds`` is its own load time).
    """
    if not phrases or repeats < 1:
        raise ValueError(f"need phrases and repeats >= 1; got {len(phrases)} phrases, repeats={repeats}")
    expander = expander or LocalLLMExpander(settings, base_serves=True)
    load_average_start = os.getloadavg()[0]
    started = time.perf_counter()
    expander.load()
    load_seconds = expander.load_seconds if expander.load_seconds is not None else time.perf_counter() - started
    seconds: list[float] = []
    prompt_tokens: list[int] = []
    new_tokens: list[int] = []
    failures = 0
    for _ in range(repeats):
        for phrase in phrases:
            try:
                completion = expander.complete(phrase, user=None)
            except StrategyFailed:
                failures += 1
                continue
            seconds.append(completion.seconds)
            prompt_tokens.append(completion.prompt_tokens)
            new_tokens.append(completion.new_tokens)
    if not seconds:
        raise StrategyFailed(f"the local LLM completed none of {len(phrases) * repeats} phrases")
    return {
        "p50_seconds": round(statistics.median(seconds), 3),
        "p95_seconds": round(percentile(seconds, 0.95), 3),
        "mean_prompt_tokens": round(statistics.fmean(prompt_tokens), 1),
        "mean_new_tokens": round(statistics.fmean(new_tokens), 1),
        "tokens_per_second": round(sum(new_tokens) / sum(seconds), 1),
        "load_seconds": round(load_seconds, 2),
        "completions": len(seconds),
        "failures": failures,
        "threads": settings.prompts.llm_threads,
        "max_new_tokens": settings.prompts.llm_max_new_tokens,
        "base_max_new_tokens": settings.prompts.llm_base_max_new_tokens,
        "load_average_start": round(load_average_start, 2),
        "load_average_end": round(os.getloadavg()[0], 2),
    }
