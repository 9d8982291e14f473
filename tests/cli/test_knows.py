"""``imageloop doctor``, ``imageloop styles`` and ``imageloop generate`` say what the serving model knows: the
embedded model's subjects, attributes and native size (from its real ``knows.json``), which presets mean nothing to
it, and notes on a request at another size or with attributes left to chance; an open-vocabulary model is said to
be one."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import imageloop.cli.commands  # noqa: F401  (registers every command on `app`)
from imageloop.cli import app
from imageloop.cli.doctor import diagnose
from imageloop.config import Settings


def test_doctor_lists_what_the_embedded_model_knows(tmp_path: Path) -> None:
    findings = {f.topic: f for f in diagnose(Settings(data_dir=tmp_path, engine={"model": "embedded"}))}
    knows = findings["model knows"].detail
    assert knows.startswith("embedded: 24 subjects (elephant 大象, ") and "fox 狐狸" in knows
    assert "weather: clear weather / rain / snow / fog" in findings["model attributes"].detail
    assert findings["model size"].detail.startswith("64×64 only") and "64×64" in findings["model size"].fix
    assert "drawn at random" in findings["unnamed attributes"].detail
    assert "clear weather" in findings["unnamed attributes"].fix


def test_doctor_says_a_users_model_is_open_vocabulary(tmp_path: Path, tiny_model: Path) -> None:
    findings = {f.topic: f for f in diagnose(Settings(data_dir=tmp_path, engine={"model": str(tiny_model)}))}
    assert "open vocabulary (no knows.json)" in findings["model knows"].detail
    assert "model size" not in findings


def test_styles_marks_presets_that_mean_nothing_to_the_embedded_model(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    monkeypatch.setenv("IMAGELOOP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("IMAGELOOP_ENGINE__MODEL", "embedded")
    monkeypatch.setenv("COLUMNS", "400")
    result = CliRunner().invoke(app, ["styles", "anime"])
    assert result.exit_code == 0, result.output
    assert "to the embedded model" in result.output and "means nothing to this model" in result.output
    result = CliRunner().invoke(app, ["styles", "cyberpunk"])
    assert "weather 'rain'" in result.output


def test_generate_notes_another_size_and_unnamed_attributes(tmp_path: Path) -> None:
    out = tmp_path / "fox.png"
    result = CliRunner().invoke(app, ["generate", "a fox, clear weather", "--model", "embedded", "--size", "96x64",
                                      "--steps", "2", "--seed", "1", "-o", str(out)],
                                env={"IMAGELOOP_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert out.is_file()  # a note, not a refusal
    assert "note: 96×64 is not this model's size: it was trained at 64×64 only" in result.output
    assert "note: the prompt names no place, time" in result.output
