"""The learning half's figures: slang targets from the weekly rows, the held-out slang intents the served expander
is scored on, and that score for the adapter a run promoted."""

from __future__ import annotations

from pathlib import Path

from imageloop.bench.flywheel.arms import parse_arms
from imageloop.bench.flywheel.cohort import load_cohort
from imageloop.bench.flywheel.report import ArmWeek
from imageloop.bench.flywheel.run import FlywheelConfig, FlywheelRun, slang_targets
from imageloop.bench.flywheel.slang import HELDOUT_PHRASINGS, heldout_slang_intents, slang_recall
from imageloop.config import Settings
from imageloop.storage import Storage
from imageloop.training.base.captions import canonical_phrase
from imageloop.training.registry import ModelKind, Registry
from tests.training.tiny_lm import tiny_lm, tiny_tokenizer


def _week(arm: str, week: int, slang: tuple[int, int], newcomer_slang: tuple[int, int]) -> ArmWeek:
    return ArmWeek(arm, week, 100, 50, 0, 0, 0, {"slang": slang, "newcomer_slang": newcomer_slang})


def _config(tmp_path: Path, weeks: int) -> FlywheelConfig:
    return FlywheelConfig(cohort=load_cohort(None), users=4, weeks=weeks, seed=0,
                          arms=parse_arms("frozen,online,full"), out=tmp_path)


def test_slang_targets_follow_their_rules(tmp_path: Path) -> None:
    run = FlywheelRun(rows=[
        _week("frozen", 1, (40, 12), (40, 12)), _week("frozen", 3, (60, 18), (10, 3)),
        _week("online", 1, (40, 12), (40, 12)), _week("online", 3, (60, 30), (10, 3)),
        _week("full", 1, (40, 12), (40, 12)), _week("full", 3, (60, 45), (10, 7)),
    ])
    targets = slang_targets(_config(tmp_path, 3), run)
    frozen = targets["slang_full_minus_frozen"]
    assert frozen["week"] == 3 and abs(frozen["full_minus_frozen"] - 0.45) < 1e-9 and frozen["met"]
    assert abs(targets["slang_full_minus_online"]["full_minus_online"] - 0.25) < 1e-9
    growth = targets["newcomer_slang_growth"]
    assert (growth["week_1"], growth["week_3"]) == (0.3, 0.7) and growth["met"]  # 0.7 >= 2 x 0.3
    assert "expander_slang_recall" not in targets  # no adapter was scored

    small = FlywheelRun(rows=[_week("frozen", 3, (60, 40), (10, 3)), _week("full", 1, (40, 12), (40, 16)),
                              _week("full", 3, (60, 45), (10, 3))])
    targets = slang_targets(_config(tmp_path, 3), small)
    assert not targets["slang_full_minus_frozen"]["met"]  # +8 points is short of +25
    assert not targets["newcomer_slang_growth"]["met"]  # 0.3 < 2 x 0.4


def test_heldout_slang_intents_use_subjects_and_phrasings_no_user_says() -> None:
    cohort = load_cohort(None)
    intents = heldout_slang_intents(cohort)
    for language in ("en", "zh"):
        mine = [e for lang, e in intents if lang == language]
        assert not set(HELDOUT_PHRASINGS[language]) & set(cohort.slang_intents[language])
        # Every phrase in every held-out phrasing, each with its meaning as the values to recall.
        assert {tuple(sorted(e.values.items())) for e in mine} == {tuple(sorted(p.means.items()))
                                                                    for p in cohort.slang}
        used = [canonical_phrase("subject", subject, language) for subject in cohort.subjects]
        assert not [e.intent for e in mine if any(word in e.intent for word in used)]


def test_the_promoted_adapter_is_scored_against_the_base_model(tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    settings = Settings(data_dir=tmp_path / "data", prompts={"llm_max_new_tokens": 8})
    tokenizer = tiny_tokenizer()
    cohort = load_cohort(None)
    assert slang_recall(settings, cohort, tiny_lm(tokenizer), tokenizer) is None  # nothing promoted

    adapter = get_peft_model(tiny_lm(tokenizer, seed=1), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    adapter.save_pretrained(str(tmp_path / "adapter"))
    storage = Storage.open(settings)
    try:
        registry = Registry(storage.sessions, settings)
        registry.promote(registry.register(ModelKind.EXPANDER, tmp_path / "adapter", name="a", data_hash="h" * 64,
                                           metrics={}).id)
    finally:
        storage.close()
    rows = slang_recall(settings, cohort, tiny_lm(tokenizer), tokenizer)
    assert rows is not None and [r.language for r in rows] == ["en", "zh"]
    for row in rows:
        assert row.intents == len(cohort.slang) * len(HELDOUT_PHRASINGS[row.language]) * 3
        assert 0.0 <= row.base <= 1.0 and 0.0 <= row.adapter <= 1.0
        assert row.to_dict()["gain"] == row.adapter - row.base
