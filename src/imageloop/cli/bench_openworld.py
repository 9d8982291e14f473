"""The open-vocabulary part of ``imageloop bench expander`` (see :mod:`imageloop.bench.openworld`): each strategy
through the chain the server runs, per language and split, as a table and a JSON section."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from imageloop.bench.openworld import SPLITS, OpenWorldScore, TypedAsIs, load_openworld, score_openworld
from imageloop.errors import InvalidRequestError
from imageloop.prompts.expander import Expander
from imageloop.prompts.expander.chain import ChainExpander
from imageloop.prompts.expander.local_llm import LocalLLMExpander
from imageloop.prompts.expander.rules import RulesExpander, english_reading
from imageloop.prompts.lexicon import load_lexicon

OPENWORLD_FILE = "openworld_intents.jsonl"


def openworld_expanders(llm: LocalLLMExpander | None) -> dict[str, tuple[Expander, str | None]]:
    """Name → (expander, the LLM strategy whose fallbacks to count). Each runs through the chain, as served."""
    lexicon = load_lexicon()
    rules = RulesExpander(lexicon)
    built: dict[str, tuple[Expander, str | None]] = {
        "as typed": (TypedAsIs(), None),
        "rules": (ChainExpander([rules], lexicon=lexicon, personalization=False), None),
    }
    if llm is not None:
        built["local_llm"] = (ChainExpander([llm, rules], lexicon=lexicon, personalization=False), llm.name)
    return built


def run_openworld(data: Path, llm: LocalLLMExpander | None, *, llm_limit: int) -> list[OpenWorldScore]:
    """Score every expander on every language and split of ``data``/openworld_intents.jsonl; the LLM strategy on
    the first ``llm_limit`` intents of each (0 = all)."""
    path = data / OPENWORLD_FILE
    if not path.is_file():
        raise InvalidRequestError("--data", f"missing test set {path} (run from the repository root)")
    cases = load_openworld(path)
    scores = []
    for name, (expander, llm_name) in openworld_expanders(llm).items():
        for language in ("en", "zh"):
            for split in SPLITS:
                selected = [c for c in cases if c.language == language and c.split == split]
                if llm_name is not None and llm_limit:
                    selected = selected[:llm_limit]
                with tqdm(total=len(selected), desc=f"open-world {name} {language} {split}", unit="intent") as bar:
                    scores.append(score_openworld(name, expander, selected, language=language, split=split,
                                                  llm=llm_name, progress=bar.update))
    return scores


def speed_phrases(data: Path, count: int = 20) -> list[str]:
    """English readings (what the local LLM is given) of the first ``count`` dev intents, half per language."""
    cases = [c for c in load_openworld(data / OPENWORLD_FILE) if c.split == "dev"]
    lexicon = load_lexicon()
    picked = [c for c in cases if c.language == "en"][: count // 2] + [c for c in cases if c.language == "zh"][
        : count - count // 2]
    return [english_reading(c.intent, lexicon) for c in picked]


def print_llm_speed(speed: dict[str, Any]) -> None:
    Console().print(
        f"Local LLM, model loaded once, {speed['completions']} completions of English readings: "
        f"p50 {speed['p50_seconds']:.2f} s, p95 {speed['p95_seconds']:.2f} s; {speed['mean_prompt_tokens']:.0f} "
        f"prompt tokens (the cached prefix included), {speed['mean_new_tokens']:.1f} new tokens, "
        f"{speed['tokens_per_second']:.1f} tokens/s; {speed['threads']} thread(s); load average "
        f"{speed['load_average_start']:.2f} -> {speed['load_average_end']:.2f}."
    )


def openworld_json(scores: list[OpenWorldScore]) -> list[dict[str, Any]]:
    return [asdict(s) for s in scores]


def print_openworld(scores: list[OpenWorldScore]) -> None:
    console = Console(width=max(Console().width, 130))
    table = Table(title="Open-vocabulary intents (tests/data/openworld_intents.jsonl; tuned on dev only)")
    columns = ("strategy", "lang", "split", "n", "concept recall", "subject kept", "contradictions",
               "negation kept", "invented words", "repeats", "fallback", "p50", "p95")
    for column in columns:
        table.add_column(column, justify="left" if column in ("strategy", "lang", "split") else "right")
    for s in scores:
        fallback = f"{s.fallback_rate:.0%}" if s.fallback_rate is not None else "-"
        table.add_row(s.strategy, s.language, s.split, str(s.intents), f"{s.concept_recall:.2f}",
                      f"{s.subject_retention:.2f}", f"{s.contradiction_rate:.1%}", f"{s.negation_kept:.2f}",
                      f"{s.invented_word_rate:.1%}", f"{s.repeat_rate:.1%}", fallback,
                      f"{s.p50_seconds * 1000:.1f} ms", f"{s.p95_seconds * 1000:.1f} ms")
    console.print(table)
