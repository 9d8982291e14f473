from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

import imageloop.cli.commands  # noqa: F401  (registers every command on `app`)
from imageloop.bench.expander import IntentCase, personalization_effect, score_strategy, scratch_storage
from imageloop.cli import app
from imageloop.prompts.embeddings import default_embedder
from imageloop.prompts.expander.rules import RulesExpander
from imageloop.prompts.lexicon import load_lexicon
from imageloop.prompts.memory import PromptMemory

DATA = Path(__file__).resolve().parents[1] / "data"


def test_scoring_counts_recall_precision_and_validity() -> None:
    cases = [
        IntentCase("a", "en", "a fox at night", {"subject": "fox", "time": "night"}),
        IntentCase("b", "en", "a rainy beach", {"place": "beach", "weather": "rain", "mood": "cheerful"}),
    ]
    score = score_strategy(RulesExpander(), cases, load_lexicon(), language="en")
    assert (score.answered, score.valid_share) == (2, 1.0)
    assert score.recall == 4 / 5 and score.precision == 1.0
    assert score.p95_seconds >= score.p50_seconds >= 0


def test_personal_reranking_brings_the_users_taste_without_losing_the_intent(tmp_path: Path) -> None:
    storage = scratch_storage(tmp_path)
    effect = personalization_effect(storage, PromptMemory(storage, default_embedder()), load_lexicon(),
                                    kept_per_user=5)
    storage.close()
    assert effect.taste_hit_off < 0.2 < 0.8 < effect.taste_hit_on
    assert effect.intent_kept_on == 1.0


def test_cli_prints_the_table_and_writes_json_and_png(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for lang in ("en", "zh"):
        lines = (DATA / f"intents_{lang}.jsonl").read_text(encoding="utf-8").splitlines()[:6]
        (data / f"intents_{lang}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows = (DATA / "openworld_intents.jsonl").read_text(encoding="utf-8").splitlines()
    picked = [r for r in rows if '"en-00' in r][:4] + [r for r in rows if '"zh-00' in r][:4]
    (data / "openworld_intents.jsonl").write_text("\n".join(picked) + "\n", encoding="utf-8")
    out = tmp_path / "expander.json"
    result = CliRunner().invoke(app, ["bench", "expander", "--data", str(data), "-s", "rules", "-s", "retrieval",
                                      "--no-personalization", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "recall" in result.output and out.with_suffix(".png").is_file()
    report = json.loads(out.read_text())
    assert [(s["strategy"], s["language"]) for s in report["strategies"]] == [
        ("rules", "en"), ("retrieval", "en"), ("rules", "zh"), ("retrieval", "zh")]
    assert all(0.0 <= s["recall"] <= 1.0 for s in report["strategies"])
    assert {(s["strategy"], s["language"], s["split"]) for s in report["openworld"]} == {
        (name, lang, split) for name in ("as typed", "rules") for lang in ("en", "zh") for split in ("dev", "test")}
    assert "Open-vocabulary intents" in result.output
