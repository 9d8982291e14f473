"""Settings: a bad value stops start-up with a message naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from imageloop.config import load_settings
from imageloop.errors import ConfigError


def test_jobs_workers_defaults_to_one(tmp_path: Path) -> None:
    assert load_settings(data_dir=tmp_path).jobs.workers == 1


@pytest.mark.parametrize(("value", "problem"), [
    (0, "greater than or equal to 1"), (-2, "greater than or equal to 1"), (33, "less than or equal to 32"),
    ("two", "valid integer"), (1.5, "valid integer"),
])
def test_bad_jobs_workers_name_the_field(tmp_path: Path, value: object, problem: str) -> None:
    with pytest.raises(ConfigError, match=rf"jobs\.workers: .*{problem}"):
        load_settings(data_dir=tmp_path, jobs={"workers": value})


def test_jobs_workers_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGELOOP_JOBS__WORKERS", "2")
    assert load_settings(data_dir=tmp_path).jobs.workers == 2
    monkeypatch.setenv("IMAGELOOP_JOBS__WORKERS", "many")
    with pytest.raises(ConfigError, match=r"jobs\.workers"):
        load_settings(data_dir=tmp_path)


@pytest.mark.parametrize(("credits", "problem"), [
    ({"default_tier": "gold"}, "default_tier: 'gold' is not one of the tiers (admin, free, pro)"),
    ({"tiers": {"Gold": {}}, "default_tier": "Gold"}, "invalid tier name 'Gold'"),
    ({"unlimited_tiers": ["root"]}, "unlimited_tiers: 'root' is not one of the tiers"),
    ({"tiers": {"free": {"max_steps": -1}}, "unlimited_tiers": []}, "credits.tiers.free.max_steps"),
    ({"tiers": {}}, "credits.tiers"),
])
def test_credit_tiers_are_validated(tmp_path: Path, credits: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(data_dir=tmp_path, credits=credits)
    assert problem in info.value.message


def test_a_tier_that_is_no_longer_configured_reads_as_the_default(tmp_path: Path) -> None:
    credits = load_settings(data_dir=tmp_path).credits
    assert credits.enabled is False  # a private install charges nothing
    assert credits.tier("pro")[0] == "pro" and credits.tier("gold") == ("free", credits.tiers["free"])
