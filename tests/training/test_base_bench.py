"""`imageloop bench model` end to end on a tiny exported model and a tiny judge (seconds, no font for the model)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from rich.console import Console

from imageloop.bench.model import ModelBenchConfig, chance_levels, effect_prompts, hit_rates, run_model_bench
from imageloop.cli.bench_model import result_tables
from imageloop.config import Settings, load_settings
from imageloop.training.base.dataset import evaluation_specs
from imageloop.training.base.judge import save_judge, train_judge
from imageloop.training.base.scenes import ATTRIBUTE_NAMES
from tests.training.base_helpers import needs_emoji_font, tiny_export


def test_hit_rates_and_chance() -> None:
    specs = evaluation_specs(4)
    wanted = np.asarray([s.indices() for s in specs])
    rates = hit_rates(wanted, specs)
    assert all(rates[a] == 1.0 for a in [*ATTRIBUTE_NAMES, "all"])
    wrong = wanted.copy()
    wrong[:2, 0] = (wrong[:2, 0] + 1) % 24
    assert hit_rates(wrong, specs)["subject"] == 0.5 and hit_rates(wrong, specs)["all"] == 0.5
    assert chance_levels()["weather"] == 0.25 and chance_levels()["subject"] == pytest.approx(1 / 24)


def test_effect_prompts_remove_the_attribute_under_test() -> None:
    arms = effect_prompts(evaluation_specs(3))
    for prompt, negative in arms["monochrome@1.4"]:
        assert prompt.endswith("(monochrome:1.4)") and "full colour" not in prompt and negative == ""
    for (plain, _), (same, negative) in zip(arms["no_negative"], arms["negative_rain"], strict=True):
        assert plain == same and negative == "rain"
        assert not any(w in plain for w in ("clear weather", ", rain", "snow,", ", fog"))
    for weight, tag in (("0.5", "(rain:0.5)"), ("1.4", "(rain:1.4)"), ("2", "(rain:2)")):
        for (plain, _), (weighted, _) in zip(arms["rain@1"], arms[f"rain@{weight}"], strict=True):
            assert plain.endswith(", rain") and weighted == plain.removesuffix("rain") + tag


def test_effect_verdicts_follow_the_judges_rates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from imageloop.bench import model as bench_model

    cfg = ModelBenchConfig(effect_prompts=3)
    arms = effect_prompts(evaluation_specs(cfg.effect_prompts, seed=4321 + cfg.seed))
    # What the judge finds per arm: rain rises only at weight 2 (the verdict needs 1.4 or 2 above 1) and falls at
    # 0.5; monochrome does not move; the negative prompt lowers rain.
    rates = {"rain@0.5": 0.2, "rain@1": 0.4, "rain@1.4": 0.3, "rain@2": 0.6,
             **{f"monochrome@{w}": 0.5 for w in ("0.5", "1", "1.4", "2")}, "no_negative": 0.4, "negative_rain": 0.1}

    def judged(engine: object, judge: object, cfg: object, pairs: list[tuple[str, str]], attribute: str,
               value: str) -> float:
        [arm] = [name for name, arm_pairs in arms.items() if arm_pairs == pairs]
        return rates[arm]

    monkeypatch.setattr(bench_model, "_arm_rate", judged)
    engine = SimpleNamespace(prompt_weighting="a1111")  # A1111 already: no second weighting to compare with
    effects = bench_model._effects(Settings(data_dir=tmp_path), engine, None, cfg, lambda _message: None)  # type: ignore[arg-type]
    assert effects["weight_rate"]["rain"] == {"0.5": 0.2, "1": 0.4, "1.4": 0.3, "2": 0.6}
    assert (effects["weight_raises_rain"], effects["weight_lowers_rain"]) == (True, True)
    assert (effects["weight_raises_monochrome"], effects["weight_lowers_monochrome"]) == (False, False)
    assert effects["negative_lowers_rain"] is True and "weight_rate_a1111" not in effects


@pytest.mark.slow
@needs_emoji_font
def test_bench_runs_end_to_end(tmp_path: Path) -> None:
    model = tiny_export(tmp_path)
    images = np.zeros((8, 64, 64, 3), np.uint8)
    judge = train_judge(images, np.zeros((8, 8), np.int16), minutes=0.0, width=8)
    save_judge(judge, tmp_path / "judge", {})

    settings = load_settings(data_dir=tmp_path / "data")
    # The model is its own baseline: same seeds, same images, so every difference is 0 and KID's ratio is 1.
    bench = ModelBenchConfig(model=str(model), judge_dir=tmp_path / "judge", combinations=4,
                             effect_prompts=4, steps=2, speed_repeats=1, baseline=str(model))
    result, grid = run_model_bench(settings, bench)
    assert set(result["hit_rate"]["en"]) == {*ATTRIBUTE_NAMES, "all"}
    assert all(0.0 <= v <= 1.0 for lang in ("en", "zh") for v in result["hit_rate"][lang].values())
    effects = result["effects"]
    assert effects["weighting"] == "context"  # the export's imageloop.json chooses it
    assert set(effects["weight_rate"]) == {"monochrome", "rain"}
    assert set(effects["weight_rate"]["rain"]) == set(effects["weight_rate_a1111"]["rain"]) == {"0.5", "1", "1.4", "2"}
    assert result["speed"]["batch_16"]["engine_s_per_image"] > 0
    console = Console(record=True, width=200)
    for table in result_tables(result):
        console.print(table)
    text = console.export_text()
    assert "(rain:w), A1111 weighting" in text and "negative 'rain'" in text and "context weighting" in text
    assert "s/image, batch 16" in text and "KID x1000" in text
    assert grid.size[0] > 64 * 4 and grid.size[1] == 4 * 66 * 3  # real, EN, ZH, the baseline's EN
    versus = result["versus_baseline"]
    assert versus["hit_rates_hold"] and versus["worst_attribute_delta"] == 0.0
    assert versus["hit_rate_delta_ci95"]["en"]["subject"] == [0.0, 0.0]  # the same model twice: identical images
    assert "95% interval" in text
    assert result["baseline"]["resolved"]["steps"] == 20  # the baseline runs its own defaults, not --steps
    distance = result["image_distance"]
    assert distance["subset_size"] == 8 and distance["real_vs_real_kid_x1000"] < distance["kid_x1000"]


def test_versus_baseline_reports_deltas_speedup_and_kid_ratio() -> None:
    from imageloop.bench.model import versus_baseline

    def block(rate: float, s_per_image: float, kid: float) -> dict[str, object]:
        rates = dict.fromkeys((*ATTRIBUTE_NAMES, "all"), rate)
        return {"model": {"name": "m"}, "hit_rate": {"en": rates, "zh": dict(rates)},
                "speed": {f"batch_{b}": {"engine_s_per_image": s_per_image} for b in (1, 16)},
                "image_distance": {"kid_x1000": kid}}

    fast = versus_baseline(block(0.88, 0.05, 4.0), block(0.90, 0.25, 8.0))
    assert fast["hit_rates_hold"] and fast["speedup_met"] and fast["speedup"]["batch_1"] == pytest.approx(5.0)
    assert fast["kid_ratio"] == pytest.approx(0.5)
    worse = versus_baseline(block(0.85, 0.1, 8.0), block(0.90, 0.25, 8.0))
    assert not worse["hit_rates_hold"] and not worse["speedup_met"]


def test_paired_intervals_shrink_with_more_images_and_cover_the_difference() -> None:
    from imageloop.bench.model import paired_intervals

    rng = np.random.default_rng(0)

    def pair(n: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        base = rng.random((n, len(ATTRIBUTE_NAMES) + 1)) < 0.9
        flip = rng.random(base.shape) < 0.1  # the model loses 10 % of the baseline's hits
        return dict.fromkeys(("en", "zh"), base & ~flip), dict.fromkeys(("en", "zh"), base)

    small, large = paired_intervals(*pair(96)), paired_intervals(*pair(20_000))
    low, high = large["en"]["subject"]
    assert low < -0.09 < high < 0  # about -0.09 (0.1 of 0.9), and measured as a loss
    assert (high - low) < (small["zh"]["subject"][1] - small["zh"]["subject"][0]) / 4
