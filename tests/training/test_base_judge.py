"""The attribute judge: trains on real composites, saves small, loads back to the same predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imageloop.errors import ModelLoadError
from imageloop.training.base.judge import accuracy, load_judge, predict, save_judge, to_input, train_judge
from imageloop.training.base.scenes import ATTRIBUTE_KEYS, ATTRIBUTE_NAMES, random_spec


def _data(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.asarray([random_spec(rng).indices() for _ in range(n)], np.int16)
    images = rng.integers(0, 255, (n, 64, 64, 3), dtype=np.uint8)
    images[..., 0] = (labels[:, 2] * 60)[:, None, None]  # weather shows in the red channel: learnable
    return images, labels


def test_judge_learns_a_visible_attribute_and_round_trips(tmp_path: Path) -> None:
    images, labels = _data(128)
    model = train_judge(images, labels, minutes=0.15, batch_size=32, width=8)
    acc = accuracy(model, images, labels)
    assert set(acc) == set(ATTRIBUTE_NAMES)
    assert acc["weather"] > 0.5  # chance is 0.25
    save_judge(model, tmp_path, acc)
    loaded = load_judge(tmp_path)
    assert np.array_equal(predict(model, images[:16]), predict(loaded, images[:16]))
    assert (tmp_path / "judge.safetensors").stat().st_size < 2e6


def test_predict_shape_and_resizing() -> None:
    images, labels = _data(8)
    model = train_judge(images, labels, minutes=0.0, width=8)
    pred = predict(model, images)
    assert pred.shape == (8, len(ATTRIBUTE_NAMES))
    for i, name in enumerate(ATTRIBUTE_NAMES):
        assert pred[:, i].max() < len(ATTRIBUTE_KEYS[name])
    big = np.repeat(np.repeat(images, 2, axis=1), 2, axis=2)
    assert to_input(big).shape == (8, 3, 64, 64)


def test_missing_judge_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="imageloop train judge"):
        load_judge(tmp_path)
