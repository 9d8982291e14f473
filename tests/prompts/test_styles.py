"""Style presets: the shipped file, lookup by any name, applying a style, broken files, packaging, the CLI."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imageloop.cli import (
    app,
    commands,  # noqa: F401  (registers every command, as the real CLI does)
)
from imageloop.errors import ConfigError, UnknownNameError
from imageloop.prompts import parse_weights
from imageloop.prompts.styles import PROMPT_PLACEHOLDER, StylePreset, apply_style, get_style, load_styles

REPO = Path(__file__).resolve().parents[2]
CJK = re.compile(r"[\u4e00-\u9fff]")


# --- the shipped presets -------------------------------------------------------------------------------------


def test_shipped_presets_are_many_and_complete() -> None:
    presets = load_styles()
    assert len(presets) >= 30
    for slug, preset in presets.items():
        assert slug == preset.name
        assert preset.positive.count(PROMPT_PLACEHOLDER) == 1
        assert preset.negative
        assert CJK.search(preset.name_zh), preset.name_zh
        assert preset.name_en.isascii()
    wanted = {"cinematic", "analog-film", "anime", "watercolor", "oil-painting", "pixel-art", "noir", "3d-render",
              "isometric", "line-art", "ukiyo-e", "vaporwave"}
    assert wanted <= set(presets)


def test_shipped_file_is_found_as_package_data() -> None:
    resource = resources.files("imageloop").joinpath("data/styles.yaml")
    assert resource.is_file()
    assert "styles:" in resource.read_text(encoding="utf-8")


def test_load_styles_returns_a_copy() -> None:
    first = load_styles()
    first.clear()
    assert load_styles()


# --- lookup ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["analog-film", "Analog Film", "analog film", "ANALOG_FILM", " 胶片摄影 "])
def test_get_style_by_slug_english_or_chinese_name(name: str) -> None:
    assert get_style(name).name == "analog-film"


def test_unknown_style_lists_the_slugs() -> None:
    with pytest.raises(UnknownNameError) as info:
        get_style("bleak-vibes")
    assert info.value.field == "style"
    assert info.value.known == sorted(load_styles())
    assert "cinematic" in str(info.value)


def test_get_style_in_a_given_mapping() -> None:
    only = StylePreset(name="mine", name_en="Mine", name_zh="我的", positive="{prompt}, mine", negative="")
    assert get_style("我的", {"mine": only}) is only
    with pytest.raises(UnknownNameError, match="allowed: mine"):
        get_style("cinematic", {"mine": only})


# --- applying -----------------------------------------------------------------------------------------------


def test_apply_style_fills_the_template_and_adds_the_negative() -> None:
    preset = get_style("cinematic")
    positive, negative = apply_style("a cat in the rain", "text, watermark", "cinematic")
    assert positive == preset.positive.replace(PROMPT_PLACEHOLDER, "a cat in the rain")
    assert negative == "text, watermark, " + preset.negative


def test_apply_style_without_style_changes_nothing() -> None:
    assert apply_style(" a cat ", "ugly", None) == (" a cat ", "ugly")
    assert apply_style("a cat", "ugly", "  ") == ("a cat", "ugly")


def test_apply_style_keeps_weights_and_braces_of_the_prompt() -> None:
    positive, _ = apply_style("a (cat:1.3) named {x}", "", "水彩")
    assert "a (cat:1.3) named {x}" in positive
    assert ("cat", 1.3) in parse_weights(positive)


def test_apply_style_does_not_repeat_negative_terms() -> None:
    preset = StylePreset(name="s", name_en="S", name_zh="样", positive="{prompt}, s", negative="blurry, lowres, ugly")
    assert preset.apply("a cat", "Blurry, text") == ("a cat, s", "Blurry, text, lowres, ugly")
    assert preset.apply("a cat", "") == ("a cat, s", "blurry, lowres, ugly")


def test_empty_prompt_leaves_no_dangling_commas() -> None:
    preset = StylePreset(name="s", name_en="S", name_zh="样", positive="{prompt}, film grain , warm", negative="")
    assert preset.apply("  ", "") == ("film grain, warm", "")


def test_apply_unknown_style_raises() -> None:
    with pytest.raises(UnknownNameError):
        apply_style("a cat", "", "no-such-style")


# --- broken files -------------------------------------------------------------------------------------------

GOOD = """  - name: good
    name_en: Good
    name_zh: 好
    positive: "{prompt}, good"
    negative: "bad"
"""


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "styles.yaml"
    path.write_text(body, encoding="utf-8")
    return path


def test_custom_file_loads(tmp_path: Path) -> None:
    presets = load_styles(_write(tmp_path, "styles:\n" + GOOD))
    assert list(presets) == ["good"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('  - {name: broken, name_en: B, name_zh: 坏, positive: "no placeholder"}',
         r"entry 2 \('broken'\): positive: .*exactly once"),
        ('  - {name: Bad Slug, name_en: B, name_zh: 坏, positive: "{prompt}"}', r"entry 2 \('Bad Slug'\): name"),
        ('  - {name: nozh, name_en: B, positive: "{prompt}"}', r"entry 2 \('nozh'\): name_zh: Field required"),
        ('  - {name: extra, name_en: B, name_zh: 坏, positive: "{prompt}", colour: red}', r"entry 2 .*colour"),
        ("  - just a string", r"entry 2: "),
        ('  - {name: other, name_en: good, name_zh: 坏, positive: "{prompt}"}', r"'other' and 'good' share"),
    ],
)
def test_broken_entry_is_named(tmp_path: Path, entry: str, message: str) -> None:
    path = _write(tmp_path, "styles:\n" + GOOD + entry + "\n")
    with pytest.raises(ConfigError, match=message) as info:
        load_styles(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("body", "message"),
    [("styles: [unclosed", "not valid YAML"), ("- a\n- b\n", "expected a mapping"), ("styles: []\n", "empty")],
)
def test_broken_file_is_reported(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_styles(_write(tmp_path, body))


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_styles(tmp_path / "nope.yaml")


# --- CLI ------------------------------------------------------------------------------------------------------


def test_cli_lists_all_presets() -> None:
    result = CliRunner().invoke(app, ["styles"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert f"{len(load_styles())} style presets" in result.output
    for preset in load_styles().values():
        assert preset.name in result.output


def test_cli_shows_one_preset_by_chinese_name() -> None:
    result = CliRunner().invoke(app, ["styles", "浮世绘"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "ukiyo-e" in result.output and "negative" in result.output
    assert "cinematic" not in result.output


def test_cli_unknown_name_is_an_error() -> None:
    result = CliRunner().invoke(app, ["styles", "bleak"])
    assert isinstance(result.exception, UnknownNameError)


# --- packaging ------------------------------------------------------------------------------------------------


def test_wheel_ships_the_presets(tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), "."],
        cwd=source, check=True, capture_output=True,
    )
    [wheel] = tmp_path.glob("imageloop-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert "imageloop/data/styles.yaml" in archive.namelist()
