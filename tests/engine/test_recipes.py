"""Recipe model, RecipeStore (YAML/JSON files, atomic saves, broken files reported) and the recipes/loras CLI."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from pydantic import ValidationError
from typer.testing import CliRunner

import imageloop.cli.commands  # noqa: F401  (registers every command on `app`)
from imageloop.cli import app
from imageloop.cli.recipes import parse_lora_option
from imageloop.config import Settings
from imageloop.engine.recipes import (
    LoraWeight,
    Recipe,
    RecipeStore,
    dump_recipe,
    parse_recipe_file,
    recipe_from_fields,
    resolve_lora_path,
)
from imageloop.errors import ConflictError, InvalidRequestError, RecipeError, UnknownNameError


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    loras = tmp_path / "loras"
    loras.mkdir()
    for name in ("detail", "ink"):
        (loras / f"{name}.safetensors").write_bytes(b"stand-in; the store only checks that LoRA files exist")
    return Settings(data_dir=tmp_path)


@pytest.fixture()
def store(settings: Settings) -> RecipeStore:
    return RecipeStore(settings)


def write(store: RecipeStore, file_name: str, text: str) -> Path:
    store.recipes_dir.mkdir(parents=True, exist_ok=True)
    path = store.recipes_dir / file_name
    path.write_text(text, encoding="utf-8")
    return path


# The model -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "Has-Caps", "-leading", "with space", "a/b", "../up", "x" * 65])
def test_recipe_name_must_be_a_slug(name: str) -> None:
    with pytest.raises(ValidationError, match="name"):
        Recipe(name=name)


@pytest.mark.parametrize("weight", [-4.01, 4.5, float("nan")])
def test_lora_weight_is_range_checked(weight: float) -> None:
    with pytest.raises(ValidationError, match="weight"):
        LoraWeight(file="detail", weight=weight)


@pytest.mark.parametrize("file", ["../secret.safetensors", "sub/../../x", "sub\\..\\..\\x"])
def test_relative_lora_names_cannot_leave_the_loras_dir(file: str) -> None:
    with pytest.raises(ValidationError, match="file"):
        LoraWeight(file=file)


def test_recipe_rejects_unknown_fields_and_duplicate_loras() -> None:
    with pytest.raises(ValidationError, match="cfg"):
        Recipe.model_validate({"name": "x", "cfg": 7})
    with pytest.raises(ValidationError, match="listed twice"):
        Recipe(name="x", loras=[LoraWeight(file="detail"), LoraWeight(file="detail", weight=0.5)])


def test_recipe_from_fields_names_the_bad_field() -> None:
    with pytest.raises(RecipeError, match=r"steps: Input should be greater than or equal to 1"):
        recipe_from_fields({"name": "x", "steps": 0})


def test_resolve_lora_path(settings: Settings, tmp_path: Path) -> None:
    expected = settings.loras_dir / "detail.safetensors"
    assert resolve_lora_path("detail", settings.loras_dir) == expected
    assert resolve_lora_path("detail.safetensors", settings.loras_dir) == expected
    assert resolve_lora_path(str(expected), tmp_path / "elsewhere") == expected
    with pytest.raises(RecipeError, match="'missing' not found"):
        resolve_lora_path("missing", settings.loras_dir)
    pickled = tmp_path / "old.ckpt"
    pickled.write_bytes(b"x")
    with pytest.raises(RecipeError, match=r"only \.safetensors"):
        resolve_lora_path(str(pickled), settings.loras_dir)


# The store -------------------------------------------------------------------------------------------------------


def test_save_get_list_delete(store: RecipeStore) -> None:
    recipe = Recipe(
        name="ink-wash",
        description="Sumi-e",
        loras=[LoraWeight(file="ink", weight=0.8), LoraWeight(file="detail.safetensors", weight=-0.3)],
        guidance_scale=5.5,
        steps=28,
        scheduler="DPM++ 2M",
        style="painting",
    )
    path = store.save(recipe)
    assert path == store.recipes_dir / "ink-wash.yaml"
    assert yaml.safe_load(path.read_text())["loras"][0] == {"file": "ink", "weight": 0.8}
    assert store.get("ink-wash") == recipe
    store.save(Recipe(name="another"))
    assert [r.name for r in store.list()] == ["another", "ink-wash"]
    store.delete("ink-wash")
    assert store.names() == ["another"]
    with pytest.raises(UnknownNameError) as info:
        store.get("ink-wash")
    assert info.value.known == ["another"]
    with pytest.raises(UnknownNameError, match="ink-wash"):
        store.delete("ink-wash")


def test_reads_yaml_and_json_files_and_takes_the_name_from_the_file(store: RecipeStore) -> None:
    write(store, "portrait.yml", "loras:\n  - file: detail\n    weight: 0.5\nsteps: 20\n")
    write(store, "sketch.json", json.dumps({"name": "sketch", "guidance_scale": 3}))
    assert store.get("portrait") == Recipe(name="portrait", loras=[LoraWeight(file="detail", weight=0.5)], steps=20)
    assert store.get("sketch").guidance_scale == 3
    # Saving keeps an existing file's format.
    store.save(Recipe(name="sketch", steps=12))
    assert json.loads((store.recipes_dir / "sketch.json").read_text())["steps"] == 12
    assert not (store.recipes_dir / "sketch.yaml").exists()


@pytest.mark.parametrize(
    ("file_name", "text", "message"),
    [
        ("bad-yaml.yaml", "loras: [unclosed\n", r"bad-yaml\.yaml: not valid YAML"),
        ("bad-json.json", "{'single': 'quotes'}", r"bad-json\.json: not valid JSON"),
        ("list.yaml", "- just\n- a list\n", r"list\.yaml: expected a mapping"),
        ("weight.yaml", "loras:\n  - {file: detail, weight: 9}\n", r"weight\.yaml: loras\.0\.weight: .*less than"),
        ("extra.yaml", "sampler: Euler\n", r"extra\.yaml: sampler: Extra inputs are not permitted"),
        ("renamed.yaml", "name: other\n", r"renamed\.yaml: name: 'other' does not match"),
        ("lost.yaml", "loras: [{file: gone}]\n", r"lost.*lost\.yaml.*LoRA 'gone' not found"),
    ],
)
def test_a_broken_file_is_named_and_the_others_still_load(
    store: RecipeStore, file_name: str, text: str, message: str
) -> None:
    store.save(Recipe(name="good", loras=[LoraWeight(file="detail")]))
    write(store, file_name, text)
    scan = store.scan()
    assert list(scan.recipes) == ["good"]
    assert len(scan.problems) == 1
    assert isinstance(scan.problems[0], RecipeError)
    assert re.search(message, scan.problems[0].message), scan.problems[0].message
    with pytest.raises(RecipeError, match=message):
        store.get(Path(file_name).stem)
    assert store.get("good").name == "good"


def test_two_files_for_one_name_is_an_error(store: RecipeStore) -> None:
    write(store, "twin.yaml", "steps: 10\n")
    write(store, "twin.json", '{"steps": 20}')
    with pytest.raises(RecipeError, match="several files"):
        store.get("twin")
    assert store.names() == []
    assert "twin" in store.scan().problems[0].message


def test_save_refuses_missing_loras_and_existing_names(store: RecipeStore) -> None:
    with pytest.raises(RecipeError, match="'nowhere' not found"):
        store.save(Recipe(name="x", loras=[LoraWeight(file="nowhere")]))
    assert not store.recipes_dir.exists() or store.names() == []
    store.save(Recipe(name="x"))
    with pytest.raises(ConflictError, match="already exists"):
        store.save(Recipe(name="x", steps=3), overwrite=False)
    assert store.get("x").steps is None


def test_save_is_atomic(store: RecipeStore, monkeypatch: pytest.MonkeyPatch) -> None:
    path = store.save(Recipe(name="keep", steps=10))
    before = path.read_bytes()

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        store.save(Recipe(name="keep", steps=99))
    assert path.read_bytes() == before
    assert sorted(p.name for p in store.recipes_dir.iterdir()) == ["keep.yaml"]  # no temp file left behind


def test_unknown_and_unsafe_names_are_unknown(store: RecipeStore) -> None:
    store.save(Recipe(name="one"))
    for name in ("two", "../one", "ONE", ""):
        with pytest.raises(UnknownNameError) as info:
            store.get(name)
        assert info.value.known == ["one"]


names = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,20}", fullmatch=True)
lora_weights = st.builds(
    LoraWeight,
    file=st.sampled_from(["detail", "ink.safetensors"]),
    weight=st.floats(-4, 4, allow_nan=False),
)
recipes = st.builds(
    Recipe,
    name=names,
    description=st.text(max_size=40),
    loras=st.lists(lora_weights, max_size=2, unique_by=lambda lw: lw.file),
    guidance_scale=st.none() | st.floats(0, 50, allow_nan=False),
    steps=st.none() | st.integers(1, 1000),
    scheduler=st.none() | st.sampled_from(["Euler a", "DPM++ 2M Karras", "UniPC"]),
    style=st.none() | st.text(min_size=1, max_size=20),
)


@pytest.mark.parametrize("description", ["next\x85line", "a\u2028b\u2029c", "雨中 \x85"])
def test_yaml_line_break_characters_round_trip(store: RecipeStore, description: str) -> None:
    recipe = Recipe(name="breaks", description=description)
    assert parse_recipe_file(store.save(recipe)) == recipe


@hyp_settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(recipe=recipes, as_json=st.booleans())
def test_any_valid_recipe_round_trips_through_its_file(store: RecipeStore, recipe: Recipe, as_json: bool) -> None:
    json_text = dump_recipe(recipe, json_format=True)
    path = write(store, f"{recipe.name}.json", json_text) if as_json else store.save(recipe)
    assert parse_recipe_file(path) == recipe
    assert store.get(recipe.name) == recipe
    store.delete(recipe.name)


# The CLI ---------------------------------------------------------------------------------------------------------


def test_parse_lora_option() -> None:
    assert parse_lora_option("detail") == LoraWeight(file="detail", weight=1.0)
    assert parse_lora_option("detail.safetensors:0.6") == LoraWeight(file="detail.safetensors", weight=0.6)
    assert parse_lora_option("/abs/x.safetensors:-1") == LoraWeight(file="/abs/x.safetensors", weight=-1)
    with pytest.raises(InvalidRequestError, match="--lora"):
        parse_lora_option("detail:strong")
    with pytest.raises(InvalidRequestError, match="less than or equal to 4"):
        parse_lora_option("detail:5")


def test_cli_recipes_add_list_show_rm(settings: Settings) -> None:
    runner = CliRunner()
    env = {"IMAGELOOP_DATA_DIR": str(settings.data_dir)}
    added = runner.invoke(
        app,
        ["recipes", "add", "noir", "--lora", "detail:0.6", "--lora", "ink:-0.4", "--cfg", "6", "--steps", "30",
         "--scheduler", "DPM++ 2M", "--style", "cinematic", "-d", "Film noir"],
        env=env,
    )
    assert added.exit_code == 0, added.output
    assert RecipeStore(settings).get("noir") == Recipe(
        name="noir",
        description="Film noir",
        loras=[LoraWeight(file="detail", weight=0.6), LoraWeight(file="ink", weight=-0.4)],
        guidance_scale=6,
        steps=30,
        scheduler="DPM++ 2M",
        style="cinematic",
    )
    listed = runner.invoke(app, ["recipes", "list"], env=env)
    assert listed.exit_code == 0 and "noir" in listed.output and "detail:0.6" in listed.output
    shown = runner.invoke(app, ["recipes", "show", "noir"], env=env)
    assert "scheduler: DPM++ 2M" in shown.output
    assert str(settings.loras_dir / "ink.safetensors") in shown.output
    again = runner.invoke(app, ["recipes", "add", "noir"], env=env)
    assert isinstance(again.exception, ConflictError) and "--force" in again.exception.message
    missing = runner.invoke(app, ["recipes", "add", "other", "--lora", "nope:1"], env=env)
    assert isinstance(missing.exception, RecipeError) and "nope" in missing.exception.message
    removed = runner.invoke(app, ["recipes", "rm", "noir"], env=env)
    assert removed.exit_code == 0
    assert RecipeStore(settings).names() == []


def test_cli_loras_add_checks_the_file(settings: Settings, tmp_path: Path) -> None:
    from tests.engine.tiny_loras import make_diffusers_lora

    runner = CliRunner()
    env = {"IMAGELOOP_DATA_DIR": str(settings.data_dir)}
    source = make_diffusers_lora(tmp_path / "src" / "my_style.safetensors")
    added = runner.invoke(app, ["loras", "add", str(source)], env=env)
    assert added.exit_code == 0, added.output
    assert (settings.loras_dir / "my_style.safetensors").read_bytes() == source.read_bytes()
    assert "68 LoRA layers" in added.output
    not_lora = tmp_path / "src" / "random.safetensors"
    not_lora.write_bytes(b"\x00" * 64)
    failed = runner.invoke(app, ["loras", "add", str(not_lora)], env=env)
    assert isinstance(failed.exception, RecipeError) and "random.safetensors" in failed.exception.message
    assert not (settings.loras_dir / "random.safetensors").exists()
    listed = runner.invoke(app, ["loras", "list"], env=env)
    assert "my_style" in listed.output
