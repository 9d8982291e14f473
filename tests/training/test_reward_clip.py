"""The reward model can start from a CLIP-family scorer on disk (training.reward_base): it is fine-tuned on our pairs
and labels, reported beside the small offline model on the same held-out pairs, registered, and loaded again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from imageloop.config import Settings, TrainingSettings, load_settings
from imageloop.errors import ConfigError, ModelLoadError, UnsupportedModelError
from imageloop.storage import Storage
from imageloop.training.cycle import TrainingCycle
from imageloop.training.registry import ModelKind, ModelStatus
from imageloop.training.reward import (
    RewardModel,
    clip_start,
    heldout_metrics,
    load_reward_model,
    save_reward_model,
    train_reward_variants,
)
from imageloop.training.reward_clip import ClipRewardModel, load_clip_base
from tests.storage.conftest import FakeClock
from tests.training.records import BLUE, RED, png, preference_world
from tests.training.tiny_clip import tiny_clip_folder
from tests.training.tiny_lm import FAST_CYCLE, TinyLoader

# With this seed the random tiny CLIP ranks blue above red: kept-red pairs are ones it must learn.
BLUE_LIKING_SEED = 3
TINY_TRAINING = {"reward_clip_layers": 1, "reward_clip_learning_rate": 1e-2}


@pytest.fixture
def clip_folder(tmp_path: Path) -> Path:
    return tiny_clip_folder(tmp_path / "pickscore-like", seed=BLUE_LIKING_SEED)


def _pairs(count: int, seed: int) -> list[dict[str, Any]]:
    """People keep the red image over the blue one, whatever they asked for."""
    return [{"caption": f"a {['cat', 'dog', 'bird'][i % 3]} {i}", "jpg_0": png(BLUE, seed + i),
             "jpg_1": png(RED, seed + 500 + i), "label_0": 0.0, "label_1": 1.0} for i in range(count)]


def _labels(count: int) -> list[dict[str, Any]]:
    return [{"caption": f"a house {i}", "jpg": png(RED if i % 2 else BLUE, 7000 + i), "label": float(i % 2)}
            for i in range(count)]


def test_a_clip_scorer_learns_our_preference_and_is_reported_beside_the_offline_model(clip_folder: Path) -> None:
    base = clip_start(None, TrainingSettings(reward_base=clip_folder, **TINY_TRAINING))
    assert isinstance(base, ClipRewardModel)
    heldout = _pairs(30, seed=3000)
    before = heldout_metrics(base, heldout)["heldout_pairwise_accuracy"]
    assert before <= 0.2  # out of the box it prefers the other colour

    model, variants = train_reward_variants(_pairs(24, seed=0), _labels(24), heldout, epochs=8, clip=base)

    assert isinstance(model, ClipRewardModel) and model.NAME == "reward-clip"
    assert variants["scorer"] == "clip" and variants["base"] == str(clip_folder)
    assert variants["clip_start"] == before  # the base itself is left as it was
    shared = {p.data_ptr() for p in base.clip.parameters()} & {p.data_ptr() for p in model.clip.parameters()}
    frozen = [p for p in model.clip.parameters() if not p.requires_grad]
    assert len(shared) == len(frozen) > 0  # the frozen tensors are shared with the base, not copied
    assert variants["pairs+labels"] == heldout_metrics(model, heldout)["heldout_pairwise_accuracy"] >= 0.9
    assert variants["pairs"] is not None and variants["labels_train"] == 24
    assert variants["offline"] is not None and variants["offline"] >= 0.9  # the small model, same data, same pairs
    # Score = logit_scale * cos (+ the label offset): bounded by the scale, whatever the caption.
    scale = float(model.clip.logit_scale.exp())
    score = model.score([png(RED, 1)], ["a cat"])[0] - float(model.offset.detach())
    assert abs(score) <= scale + 1e-4


def test_a_clip_version_saves_only_what_training_changed_and_loads_again(clip_folder: Path, tmp_path: Path) -> None:
    base = load_clip_base(clip_folder, 1, 1e-2)
    model, _ = train_reward_variants(_pairs(16, seed=0), [], _pairs(8, seed=3000), epochs=4, clip=base)
    folder = save_reward_model(model, tmp_path / "version", {"note": "test"})

    assert sorted(p.name for p in folder.iterdir()) == ["reward.json", "reward.safetensors"]
    assert (folder / "reward.safetensors").stat().st_size < (clip_folder / "model.safetensors").stat().st_size / 2
    loaded = load_reward_model(folder)
    assert isinstance(loaded, ClipRewardModel) and loaded.base == clip_folder and loaded.train_layers == 1
    images, captions = [png(RED, 5), png(BLUE, 6)], ["a dog", "a cat"]
    assert loaded.score(images, captions) == pytest.approx(model.score(images, captions), abs=1e-5)
    assert loaded.score(images, captions) != pytest.approx(base.score(images, captions), abs=1e-3)
    # The next cycle continues from this version while the setting names the same base the same way.
    same = TrainingSettings(reward_base=clip_folder, **TINY_TRAINING)
    assert clip_start(loaded, same) is loaded
    assert clip_start(loaded, same.model_copy(update={"reward_clip_layers": 2})) is not loaded
    assert clip_start(RewardModel(), TrainingSettings()) is None  # no base: the small model is the candidate

    (clip_folder / "model.safetensors").unlink()  # the base the version was trained from is gone
    with pytest.raises(UnsupportedModelError, match=r"pickscore-like.*model\.safetensors"):
        load_reward_model(folder)


def test_a_folder_that_is_not_a_clip_model_is_named(tmp_path: Path, clip_folder: Path) -> None:
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"reward_base.*bert is not a CLIP model folder.*'bert'"):
        load_settings(data_dir=tmp_path / "data", training={"reward_base": str(bert)})
    with pytest.raises(ConfigError, match="nowhere is not a CLIP model folder"):
        load_settings(data_dir=tmp_path / "data", training={"reward_base": str(tmp_path / "nowhere")})
    with pytest.raises(UnsupportedModelError, match="bert is not a CLIP model folder"):
        load_clip_base(bert, 1, 1e-5)
    with pytest.raises(ModelLoadError, match="3 blocks per tower"):
        load_clip_base(clip_folder, 4, 1e-5)


def test_a_cycle_registers_the_clip_reward_model_and_records_the_offline_one_beside_it(
    storage: Storage, tmp_path: Path, clock: FakeClock, clip_folder: Path
) -> None:
    user, _ = storage.users.create_user("ada")
    preference_world(storage, user.id, chains=30)
    settings = Settings(data_dir=tmp_path / "data", database_url=str(storage.db_engine.url),
                        training={**FAST_CYCLE, **TINY_TRAINING, "reward_base": clip_folder})
    cycle = TrainingCycle(settings, storage, expander_loader=TinyLoader(), clock=clock)
    result = cycle.run(now=clock())

    version = cycle.registry.get(result.stages["reward"]["version_id"])
    variants = version.metrics["variants"]
    assert version.name == "reward-clip" and version.status is ModelStatus.PROMOTED
    assert variants["scorer"] == "clip" and variants["clip_start"] <= 0.2
    assert variants["pairs+labels"] == version.metrics["heldout_pairwise_accuracy"] >= 0.9
    assert variants["offline"] is not None
    current = cycle.registry.current(ModelKind.REWARD)
    assert current is not None and current.id == version.id
    reloaded = load_reward_model(cycle.registry.path(current))
    assert isinstance(reloaded, ClipRewardModel) and reloaded.base == clip_folder
