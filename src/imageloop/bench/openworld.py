"""The open-vocabulary part of ``imageloop bench expander``: does the final prompt keep what the person asked for?

The test set (``tests/data/openworld_intents.jsonl``) was written before the expander was tuned, by someone who did
not read the lexicon: English and Chinese intents as people type them, each annotated with the subjects and
concepts a good English prompt must carry (any of several alternatives counts), the things the person excluded, and
the words that would contradict the intent. It is split dev/test; tuning looks at dev only.

Scores per strategy, language and split (a concept is *mentioned* when one of its alternatives appears in the prompt
as whole words, plurals folded):
- concept recall: subjects and concepts mentioned in the positive prompt / annotated;
- subject retention: intents whose every subject is mentioned / intents naming a subject;
- contradiction rate: intents whose positive prompt mentions a must-not word;
- negation: excluded things in the negative prompt and not in the positive one / excluded things;
- invented-word rate: intents whose positive prompt holds a word that is not English (wordfreq) and not in the intent;
- repeat rate: intents whose prompt repeats a tag;
- fallback rate (LLM strategies): intents where the LLM's answer was not used or none of its words survived the checks;
- p50 / p95 seconds per expansion.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imageloop.bench.stats import percentile
from imageloop.errors import InvalidRequestError
from imageloop.prompts.expander import Expander, Expansion
from imageloop.prompts.lexicon import normalise_text
from imageloop.prompts.words import unreal_words

__all__ = ["OpenWorldCase", "OpenWorldScore", "TypedAsIs", "load_openworld", "mentions", "score_openworld"]

SPLITS = ("dev", "test")


@dataclass(frozen=True, slots=True)
class OpenWorldCase:
    id: str
    language: str
    split: str
    intent: str
    subject: tuple[tuple[str, ...], ...]
    concepts: tuple[tuple[str, ...], ...]
    negative: tuple[tuple[str, ...], ...]
    must_not: tuple[str, ...]


@dataclass
class OpenWorldScore:
    """One strategy on one language and split."""

    strategy: str
    language: str
    split: str
    intents: int
    concept_recall: float
    subject_retention: float
    contradiction_rate: float
    negation_kept: float
    invented_word_rate: float
    repeat_rate: float
    fallback_rate: float | None
    p50_seconds: float
    p95_seconds: float
    failures: list[dict[str, Any]] = field(default_factory=list)


def _groups(row: dict[str, Any], key: str) -> tuple[tuple[str, ...], ...]:
    value = row.get(key)
    if not isinstance(value, list) or not all(isinstance(g, list) and g for g in value):
        raise InvalidRequestError(f"{row.get('id')}.{key}", "must be a list of non-empty lists of words")
    return tuple(tuple(str(w) for w in group) for group in value)


def load_openworld(path: Path) -> list[OpenWorldCase]:
    """The annotated cases of ``path`` (JSONL); InvalidRequestError naming the line and field when malformed."""
    cases = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidRequestError(f"{path.name}:{number}", f"not JSON: {exc}") from exc
        if row.get("split") not in SPLITS or row.get("language") not in ("en", "zh"):
            raise InvalidRequestError(f"{path.name}:{number}", "needs split dev|test and language en|zh")
        cases.append(OpenWorldCase(
            id=str(row["id"]), language=row["language"], split=row["split"], intent=str(row["intent"]),
            subject=_groups(row, "subject"), concepts=_groups(row, "concepts"), negative=_groups(row, "negative"),
            must_not=tuple(str(w) for w in row.get("must_not", [])),
        ))
    return cases


def _stem(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ches", "shes", "xes", "sses")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _tokens(text: str) -> list[str]:
    plain = re.sub(r":\s*[0-9.]+\s*\)", ")", normalise_text(text))
    return [_stem(t) for t in re.findall(r"[a-z0-9]+", plain)]


def mentions(text: str, alternatives: Iterable[str]) -> bool:
    """True when one of ``alternatives`` appears in ``text`` as whole words (weights ignored, plurals folded)."""
    tokens = _tokens(text)
    for alternative in alternatives:
        want = _tokens(alternative)
        if want and any(tokens[i : i + len(want)] == want for i in range(len(tokens) - len(want) + 1)):
            return True
    return False


def _tags(prompt: str) -> list[str]:
    return [normalise_text(t) for t in prompt.split(",") if t.strip()]


def _llm_fell_back(expansion: Expansion, strategy: str) -> bool:
    """The LLM strategy ``strategy`` did not shape this prompt: not used, or none of its tags survived."""
    attempts = expansion.details.get("attempts", [])
    used = any(a.get("strategy") == strategy and a.get("outcome") == "used" for a in attempts)
    survived = any(p.get("source") == strategy for p in expansion.details.get("provenance", []))
    return not (used and survived)




def score_openworld(
    name: str,
    expander: Expander,
    cases: Sequence[OpenWorldCase],
    *,
    language: str,
    split: str,
    llm: str | None = None,
    progress: Callable[[], object] | None = None,
) -> OpenWorldScore:
    """Run ``expander`` on ``cases`` and score it (module docstring); ``llm`` names the LLM strategy whose fallback
    rate to count."""
    found = wanted = with_subject = subject_kept = contradicted = invented = repeated = fell_back = 0
    negated_ok = negated_total = 0
    latencies: list[float] = []
    failures: list[dict[str, Any]] = []
    for case in cases:
        start = time.perf_counter()
        expansion = expander.expand(case.intent, user=None)
        latencies.append(time.perf_counter() - start)
        assert expansion is not None
        positive, negative = expansion.prompt, expansion.negative or ""
        groups = [*case.subject, *case.concepts]
        hits = [mentions(positive, g) for g in groups]
        found += sum(hits)
        wanted += len(groups)
        if case.subject:
            with_subject += 1
            subject_kept += all(mentions(positive, g) for g in case.subject)
        bad = [w for w in case.must_not if mentions(positive, [w])]
        contradicted += bool(bad)
        intent_words = set(re.findall(r"[a-z0-9'-]+", normalise_text(case.intent)))
        made_up = [w for w in unreal_words(positive) if w not in intent_words]
        invented += bool(made_up)
        tags = _tags(positive)
        repeated += len(tags) != len(set(tags))
        for group in case.negative:
            negated_total += 1
            negated_ok += mentions(negative, group) and not mentions(positive, group)
        if llm is not None:
            fell_back += _llm_fell_back(expansion, llm)
        if (not all(hits) or bad or made_up) and len(failures) < 12:
            failures.append({"id": case.id, "intent": case.intent, "prompt": positive, "negative": negative,
                             "missing": [g[0] for g, hit in zip(groups, hits, strict=True) if not hit],
                             "contradicts": bad, "invented": made_up})
        if progress is not None:
            progress()
    n = max(len(cases), 1)
    return OpenWorldScore(
        strategy=name, language=language, split=split, intents=len(cases),
        concept_recall=found / wanted if wanted else 1.0,
        subject_retention=subject_kept / with_subject if with_subject else 1.0,
        contradiction_rate=contradicted / n, negation_kept=negated_ok / negated_total if negated_total else 1.0,
        invented_word_rate=invented / n, repeat_rate=repeated / n,
        fallback_rate=fell_back / n if llm is not None else None,
        p50_seconds=percentile(latencies, 0.5), p95_seconds=percentile(latencies, 0.95), failures=failures,
    )


class TypedAsIs(Expander):
    """The baseline: the intent as typed is the prompt (what a user gets with expansion off)."""

    name = "as typed"

    @property
    def version(self) -> str:
        return "0"

    def expand(self, intent: str, *, user: str | None = None, language: Any = None) -> Expansion:
        return Expansion(intent, None, self.name, self.version, "en")
