"""Sprites, scenes, captions and the dataset of the embedded model."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imageloop.training.base.captions import LANGUAGES, caption, prompt_for, strip_weights
from imageloop.training.base.dataset import (
    build_dataset,
    evaluation_specs,
    heldout_groups,
    is_heldout,
    load_dataset,
    render_samples,
    sample_spec,
)
from imageloop.training.base.scenes import ATTRIBUTE_KEYS, SceneSpec, random_spec, render_scene
from imageloop.training.base.sprites import SUBJECTS, render_sprite
from tests.training.base_helpers import needs_emoji_font

CJK = re.compile(r"[\u4e00-\u9fff]")


def test_subjects_cover_categories_with_both_languages() -> None:
    assert len(SUBJECTS) >= 24
    assert {s.category for s in SUBJECTS} >= {"animal", "person", "object", "building", "food", "vehicle"}
    for s in SUBJECTS:
        assert s.en and s.zh and all(CJK.search(z) for z in s.zh)


@needs_emoji_font
def test_every_sprite_renders_with_visible_pixels() -> None:
    for s in SUBJECTS:
        sprite = render_sprite(s.key)
        assert sprite.mode == "RGBA" and min(sprite.size) > 40, s.key


@needs_emoji_font
def test_render_scene_is_deterministic_and_attributes_change_pixels() -> None:
    spec = SceneSpec("fox", "forest", "clear", "day", "warm", "colour", "cheerful", "left")
    a = render_scene(spec, np.random.default_rng(3))
    b = render_scene(spec, np.random.default_rng(3))
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    for attr, other in [("colour", "monochrome"), ("weather", "rain"), ("time", "night"), ("composition", "right")]:
        changed = render_scene(SceneSpec(**{**spec.__dict__, attr: other}), np.random.default_rng(3))
        assert np.abs(changed.astype(int) - a).mean() > 3, attr
    mono = render_scene(SceneSpec(**{**spec.__dict__, "colour": "monochrome"}), np.random.default_rng(3))
    assert np.array_equal(mono[..., 0], mono[..., 1]) and np.array_equal(mono[..., 1], mono[..., 2])
    cine = render_scene(SceneSpec(**{**spec.__dict__, "lighting": "cinematic"}), np.random.default_rng(3))
    assert cine[:7].max() == 0 and cine[-7:].max() == 0  # letterbox bars


@given(seed=st.integers(0, 2**32 - 1))
@settings(max_examples=50, deadline=None)
def test_captions_name_the_subject_in_both_languages(seed: int) -> None:
    rng = np.random.default_rng(seed)
    spec = random_spec(rng)
    subject = next(s for s in SUBJECTS if s.key == spec.subject)
    en, zh = caption(spec, "en", rng), caption(spec, "zh", rng)
    assert any(name in strip_weights(en) for name in subject.en)
    assert any(name in strip_weights(zh) for name in subject.zh)
    assert CJK.search(zh) and not CJK.search(en)
    assert "(" not in strip_weights(en) and ":" not in strip_weights(zh)


def test_captions_have_many_phrasings_and_weighted_tags() -> None:
    rng = np.random.default_rng(0)
    spec = SceneSpec("car", "street", "rain", "night", "cold", "monochrome", "bleak", "wide")
    for lang in LANGUAGES:
        texts = {caption(spec, lang, rng) for _ in range(300)}
        assert len(texts) > 200
        assert any(re.search(r"\([^()]+:[0-9.]+\)", t) for t in texts)
    assert strip_weights("(monochrome:1.2), raining street") == "monochrome, raining street"
    assert prompt_for(spec, "zh").startswith("汽车")


def test_heldout_groups_exist_and_sampling_respects_them() -> None:
    groups = heldout_groups()
    assert 10 < len(groups) < 200
    rng = np.random.default_rng(1)
    assert not any(is_heldout(sample_spec(rng)) for _ in range(3000))
    evaluation = evaluation_specs(50)
    assert all(is_heldout(s) for s in evaluation)
    assert evaluation == evaluation_specs(50)


@needs_emoji_font
def test_dataset_is_deterministic_and_excludes_heldout(tmp_path) -> None:  # type: ignore[no-untyped-def]
    a = build_dataset(tmp_path / "a", 48, seed=5)
    b = build_dataset(tmp_path / "b", 48, seed=5)
    c = build_dataset(tmp_path / "c", 48, seed=6)
    assert np.array_equal(np.asarray(a.images), np.asarray(b.images))
    assert np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.labels, c.labels)
    assert not any(is_heldout(a.spec(i)) for i in range(len(a)))
    loaded = load_dataset(tmp_path / "a")
    assert np.array_equal(np.asarray(loaded.images), np.asarray(a.images))
    heldout = json.loads((tmp_path / "a" / "heldout.json").read_text())
    assert len(heldout["groups"]) == len(heldout_groups()) and len(heldout["evaluation"]) == 200
    # a single sample does not depend on the dataset size
    images, labels = render_samples(3, seed=5)
    assert np.array_equal(images, np.asarray(a.images[:3])) and np.array_equal(labels, a.labels[:3])


def test_load_dataset_names_the_problem(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from imageloop.errors import TrainingError

    with pytest.raises(TrainingError, match=r"manifest\.json"):
        load_dataset(tmp_path)


def test_attribute_vocabulary_matches_the_issue() -> None:
    assert set(ATTRIBUTE_KEYS["weather"]) == {"clear", "rain", "snow", "fog"}
    assert set(ATTRIBUTE_KEYS["time"]) == {"day", "dusk", "night"}
    assert set(ATTRIBUTE_KEYS["lighting"]) == {"warm", "cold", "cinematic"}
    assert set(ATTRIBUTE_KEYS["colour"]) == {"colour", "monochrome", "sepia"}
    assert set(ATTRIBUTE_KEYS["composition"]) == {"closeup", "wide", "left", "right"}
