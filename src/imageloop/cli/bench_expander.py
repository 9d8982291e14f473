"""``imageloop bench expander``: per strategy attribute recall/precision, p50/p95 latency and valid-prompt share on
the EN/ZH intent test sets, plus the effect of personal re-ranking on simulated users (table, JSON, PNG)."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from imageloop.bench.expander import (
    IntentCase,
    PersonalizationResult,
    StrategyScore,
    build_kept_record,
    load_cases,
    personalization_effect,
    plot,
    result_json,
    score_strategy,
    scratch_storage,
    summary_rows,
)
from imageloop.bench.llm_speed import measure_llm_speed
from imageloop.bench.machine import MachineWatch
from imageloop.cli.bench_openworld import (
    openworld_json,
    print_llm_speed,
    print_openworld,
    run_openworld,
    speed_phrases,
)
from imageloop.cli.groups import bench_app
from imageloop.config import load_settings
from imageloop.errors import InvalidRequestError
from imageloop.prompts.embeddings import default_embedder
from imageloop.prompts.expander import Expander
from imageloop.prompts.expander.chain import ChainExpander
from imageloop.prompts.expander.local_llm import LocalLLMExpander
from imageloop.prompts.expander.remote import RemoteLLMExpander
from imageloop.prompts.expander.retrieval import RetrievalExpander
from imageloop.prompts.expander.rules import RulesExpander
from imageloop.prompts.lexicon import load_lexicon
from imageloop.prompts.memory import PromptMemory

STRATEGIES = ("rules", "retrieval", "local_llm", "remote_llm", "chain")
LLM_STRATEGIES = {"local_llm", "remote_llm", "chain"}


def _strategies(names: list[str], memory: PromptMemory, threshold: float,
                llms: dict[str, LocalLLMExpander | RemoteLLMExpander]) -> dict[str, Expander]:
    """The strategies to score for one language, over that language's scratch memory (LLMs built once, shared)."""
    settings = load_settings()
    lexicon = load_lexicon()
    rules = RulesExpander(lexicon)
    retrieval = RetrievalExpander(memory, threshold=threshold)
    if {"local_llm", "chain"} & set(names) and "local_llm" not in llms:
        llms["local_llm"] = LocalLLMExpander(settings, lexicon=lexicon, base_serves=True)
    if "remote_llm" in names and "remote_llm" not in llms:
        llms["remote_llm"] = RemoteLLMExpander(settings, lexicon=lexicon)
    for llm in llms.values():
        llm.examples = retrieval
    built: dict[str, Expander] = {"rules": rules, "retrieval": retrieval, **llms}
    if "chain" in names:
        built["chain"] = ChainExpander([retrieval, llms["local_llm"], rules], memory=memory, lexicon=lexicon,
                                       personalization=False)
    return {name: built[name] for name in names}


@bench_app.command("expander")
def bench_expander(
    data: Path = typer.Option(Path("tests/data"), "--data", help="Folder with intents_en.jsonl and intents_zh.jsonl."),
    strategy: list[str] = typer.Option(
        ["rules", "retrieval", "local_llm", "chain"], "--strategy", "-s",
        help=f"Strategies to run (repeat the option): {', '.join(STRATEGIES)}.",
    ),
    llm_limit: int = typer.Option(
        20, "--llm-limit", min=0, help="Intents per language for LLM strategies (0 = all; ~2 s each on 2 cores)."
    ),
    threshold: float = typer.Option(0.6, "--threshold", min=0.0, max=1.0, help="Retrieval reuse threshold."),
    out: Path = typer.Option(Path("benchmarks/results/expander.json"), "--out", help="JSON result file."),
    personalization: bool = typer.Option(True, "--personalization/--no-personalization",
                                         help="Also measure re-ranking for simulated users with known tastes."),
    plot_png: bool = typer.Option(True, "--plot/--no-plot", help="Also write a PNG chart next to the JSON."),
    openworld: bool = typer.Option(True, "--openworld/--no-openworld",
                                   help="Also score the open-vocabulary set (openworld_intents.jsonl, dev and test)."),
    openworld_llm_limit: int = typer.Option(
        0, "--openworld-llm-limit", min=0, help="Open-vocabulary intents per language and split for the local LLM "
        "(0 = all)."),
) -> None:
    """Score each expansion strategy on the EN and ZH intent sets (see imageloop.bench.expander)."""
    watch = MachineWatch()  # before anything runs: how busy the machine was at the start
    unknown = sorted(set(strategy) - set(STRATEGIES))
    if unknown:
        raise InvalidRequestError("--strategy", f"unknown strategy {unknown[0]!r}", allowed=", ".join(STRATEGIES))
    files = {lang: data / f"intents_{lang}.jsonl" for lang in ("en", "zh")}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise InvalidRequestError("--data", f"missing test set {missing[0]} (run from the repository root)")
    cases = {lang: load_cases([path]) for lang, path in files.items()}
    lexicon = load_lexicon()
    scores: list[StrategyScore] = []
    meta: dict[str, Any] = {"llm_limit": llm_limit, "threshold": threshold, "embedder": default_embedder().name,
                            "lexicon": lexicon.digest, "load_average_start": os.getloadavg()[0]}
    llms: dict[str, LocalLLMExpander | RemoteLLMExpander] = {}
    effect = None
    with tempfile.TemporaryDirectory(prefix="imageloop-bench-expander-") as scratch:
        for lang, other in (("en", "zh"), ("zh", "en")):
            # Cross-lingual retrieval: this language's intents only see prompts kept for the other language's.
            storage = scratch_storage(Path(scratch) / lang)
            memory = PromptMemory(storage, default_embedder())
            build_kept_record(storage, cases[other], lexicon, name=f"kept-{other}")
            memory.sync()
            default_embedder().clear_cache()  # queries below must not hit embeddings cached while building
            expanders = _strategies(list(dict.fromkeys(strategy)), memory, threshold, llms)
            local = llms.get("local_llm")
            if isinstance(local, LocalLLMExpander) and "llm_load_seconds" not in meta:
                # Steady-state latency is what users see; the one-time GGUF conversion and load are reported apart.
                started = time.perf_counter()
                local.load()
                meta["llm_load_seconds"] = round(time.perf_counter() - started, 2)
            for name, expander in expanders.items():
                run_cases: list[IntentCase] = cases[lang]
                if name in LLM_STRATEGIES and llm_limit:
                    run_cases = run_cases[:llm_limit]
                default_embedder().clear_cache()
                with tqdm(total=len(run_cases), desc=f"{name} {lang}", unit="intent") as bar:
                    scores.append(score_strategy(expander, run_cases, lexicon, language=lang,
                                                 progress=bar.update))
            storage.close()
        if personalization:
            storage = scratch_storage(Path(scratch) / "tastes")
            effect = personalization_effect(storage, PromptMemory(storage, default_embedder()), lexicon)
            storage.close()
    local = llms.get("local_llm")
    if isinstance(local, LocalLLMExpander):
        meta["llm_speed"] = measure_llm_speed(load_settings(), speed_phrases(data), repeats=2, expander=local)
    open_scores = []
    if openworld:
        open_scores = run_openworld(data, local if isinstance(local, LocalLLMExpander) else None,
                                    llm_limit=openworld_llm_limit)
    meta["load_average_end"] = os.getloadavg()[0]  # this CPU is shared: latencies only mean something next to it
    _print(scores, effect)
    if "llm_speed" in meta:
        print_llm_speed(meta["llm_speed"])
    if open_scores:
        print_openworld(open_scores)
    result = result_json(scores, effect, meta)
    result["openworld"] = openworld_json(open_scores)
    out.parent.mkdir(parents=True, exist_ok=True)
    result["machine"] = watch.record()
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    if (busy := watch.warning()) is not None:
        typer.echo(f"warning: {busy}", err=True)
    typer.echo(f"wrote {out}", err=True)
    if plot_png:
        plot(scores, out.with_suffix(".png"))
        typer.echo(f"wrote {out.with_suffix('.png')}", err=True)


def _print(scores: list[StrategyScore], effect: PersonalizationResult | None) -> None:
    console = Console(width=max(Console().width, 110))
    table = Table(title="Expander strategies (attribute recall/precision vs. the test sets)")
    for column in ("strategy", "lang", "intents", "answered", "recall", "precision", "valid", "p50", "p95"):
        table.add_column(column, justify="left" if column in ("strategy", "lang") else "right")
    for row in summary_rows(scores):
        table.add_row(*row)
    console.print(table)
    if effect is not None:
        console.print(
            f"Personal re-ranking, {effect.users} simulated users x {effect.intents} neutral intents, "
            f"{effect.kept_per_user} kept each: taste in the prompt {effect.taste_hit_off:.0%} without -> "
            f"{effect.taste_hit_on:.0%} with re-ranking; intent attributes kept {effect.intent_kept_on:.0%}."
        )
