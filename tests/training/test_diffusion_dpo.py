"""Diffusion-DPO on tiny random SD components: the objective, the pairs it reads, real training steps that learn a
toy preference (the kept image is always bright on the left, the other bright on the right), the held-out gate,
and the saved LoRA loading through the engine and changing its images."""

from __future__ import annotations

import io
import math
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from imageloop.config import Settings
from imageloop.engine.engine import Engine
from imageloop.engine.lora import LoraManager
from imageloop.engine.recipes import LORA_FILE, LoraWeight, Recipe
from imageloop.engine.request import BaseLora, GenerationRequest
from imageloop.errors import InvalidRequestError, TrainingError
from imageloop.training.diffusion_dpo import (
    ADAPTER_NAME,
    DiffusionDpoConfig,
    DiffusionDpoStopped,
    diffusion_dpo_loss,
    encode_pairs,
    preference_rows,
    train_diffusion_dpo,
)
from imageloop.training.diffusion_dpo_eval import evaluate_heldout, implicit_margins
from tests.tiny import save_sd15, sd15_pipeline

SUBJECTS = ["cat", "dog", "bird", "house", "tree", "river", "city", "beach"]
SIZE = 32  # small latents keep a training step at a tenth of a second
FAST = DiffusionDpoConfig(beta=1000.0, learning_rate=3e-3, steps=30, batch_size=4, rank=4, warmup_steps=0,
                          checkpoint_every=0, eval_draws=4)


def half_bright(left: bool, seed: int, size: int = SIZE) -> bytes:
    """A grey image bright on the ``left`` (or right) half, with noise. Spatial contrast on purpose: the random
    VAE's group norms erase an overall colour, not a layout."""
    rng = random.Random(seed)
    image = Image.new("RGB", (size, size))
    pixels = image.load()
    assert pixels is not None
    for x in range(size):
        for y in range(size):
            value = (220 if (x < size // 2) == left else 30) + rng.randint(-20, 20)
            pixels[x, y] = (value, value, value)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def toy_pairs(n: int, offset: int = 0) -> list[dict[str, Any]]:
    """Pick-a-Pic rows whose kept image is bright on the left; which column holds it alternates."""
    rows = []
    for i in range(n):
        kept, other = half_bright(True, offset + i), half_bright(False, offset + i + 5000)
        first = i % 2 == 0
        rows.append({"caption": f"a {SUBJECTS[i % len(SUBJECTS)]}", "jpg_0": kept if first else other,
                     "jpg_1": other if first else kept, "label_0": 1.0 if first else 0.0,
                     "label_1": 0.0 if first else 1.0})
    return rows


def toy_pipeline() -> Any:
    pipe = sd15_pipeline()
    # A trained SD VAE's scaled latents have unit spread; the random one's are ~20x smaller (noise would drown them).
    pipe.vae.register_to_config(scaling_factor=20.0)
    return pipe


def test_the_loss_rewards_a_lower_error_on_the_kept_image() -> None:
    ref = torch.tensor([1.0, 1.0])
    better_on_kept, _ = diffusion_dpo_loss(torch.tensor([0.9, 0.9]), ref, ref, ref, beta=10.0)
    better_on_other, _ = diffusion_dpo_loss(ref, torch.tensor([0.9, 0.9]), ref, ref, beta=10.0)
    unchanged, margin = diffusion_dpo_loss(ref, ref, ref, ref, beta=10.0)
    assert better_on_kept < unchanged < better_on_other
    assert math.isclose(float(unchanged), math.log(2), rel_tol=1e-6) and margin.tolist() == [0.0, 0.0]


def test_preference_rows_orient_pairs_and_leave_out_ties() -> None:
    rows = [*toy_pairs(2), {"caption": "a tie", "jpg_0": b"a", "jpg_1": b"b", "label_0": 0.5, "label_1": 0.5}]
    pairs, ties = preference_rows(rows)
    assert ties == 1 and len(pairs) == 2
    assert pairs[0]["kept"] == rows[0]["jpg_0"] and pairs[1]["kept"] == rows[1]["jpg_1"]
    with pytest.raises(TrainingError, match="pairs row 1: no 'jpg_1'"):
        preference_rows([rows[0], {**rows[1], "jpg_1": None}])


def test_an_undecodable_image_is_named(tmp_path: Path) -> None:
    rows = toy_pairs(3)
    rows[2]["jpg_0"] = b"not an image"  # row 2 keeps jpg_1, so jpg_0 is its other image
    pairs, _ = preference_rows(rows)
    with pytest.raises(TrainingError, match=r"pairs row 2: jpg_0 is not an image"):
        train_diffusion_dpo(sd15_pipeline(), pairs, FAST, tmp_path, width=SIZE, height=SIZE)


def test_config_fields_are_checked_and_documented() -> None:
    with pytest.raises(InvalidRequestError, match="beta: must be positive"):
        DiffusionDpoConfig(beta=0.0)
    assert all(DiffusionDpoConfig.help().values())


def test_training_learns_the_toy_preference_and_the_lora_changes_engine_output(tmp_path: Path) -> None:
    train, _ = preference_rows(toy_pairs(24))
    heldout, _ = preference_rows(toy_pairs(16, offset=1000))
    pipe = toy_pipeline()
    progress: list[float] = []
    result = train_diffusion_dpo(pipe, train, FAST, tmp_path / "lora", width=SIZE, height=SIZE,
                                 on_progress=lambda fraction, _message: progress.append(fraction))
    assert result.path == tmp_path / "lora" / LORA_FILE and result.path.is_file()
    assert progress[-1] == 1.0 and len(result.losses) == FAST.steps
    # The DPO loss on the training pairs, on fixed noise draws: log 2 before (the LoRA starts as a no-op), far
    # lower after. (Per-batch losses are too noisy to compare: one batch of late timesteps can spike.)
    margins = implicit_margins(pipe, encode_pairs(pipe, train, width=SIZE, height=SIZE), [ADAPTER_NAME],
                               draws=4, seed=7)[ADAPTER_NAME]
    loss_after = float(diffusion_dpo_loss(-torch.tensor(margins), torch.zeros(len(margins)), torch.zeros(1),
                                          torch.zeros(1), beta=FAST.beta)[0])
    assert loss_after < 0.5 * math.log(2), (loss_after, result.losses)

    # Held out: the LoRA prefers the kept layout more than the reference UNet does (which ties: chance).
    gate, extra = evaluate_heldout(pipe, heldout, FAST, width=SIZE, height=SIZE, confidence=0.9, min_pairs=16)
    assert gate.passed and gate.candidate_accuracy >= 0.8 and gate.current_accuracy == 0.5, gate.reason
    assert extra["heldout_pairs"] == 16 and extra["mean_margin"] > 0
    # Against itself as the current version it gains nothing: the gate holds it.
    same, _ = evaluate_heldout(pipe, heldout, FAST, width=SIZE, height=SIZE, confidence=0.9, current=result.path,
                               min_pairs=16)
    assert not same.passed and same.gain == 0.0

    # The file is a diffusers LoRA: the LoRA manager loads it and it changes the picture (and switches off cleanly).
    settings = Settings(data_dir=tmp_path / "data")
    plain_pipe, manager = sd15_pipeline(), LoraManager(settings)

    def draw() -> torch.Tensor:
        images: torch.Tensor = plain_pipe("a cat", num_inference_steps=2, guidance_scale=1.0, width=64, height=64,
                                          output_type="pt", generator=torch.Generator().manual_seed(0)).images
        return images

    before = draw()
    manager.apply(plain_pipe, Recipe(name="dpo", loras=[LoraWeight(file=str(result.path))]))
    assert not torch.allclose(before, draw())
    manager.apply(plain_pipe, None)
    assert torch.equal(before, draw())

    # Through the engine as the served base LoRA: applied on the model it was trained on, its tag recorded in the
    # model version; left out on any other model version; a user's recipe still applies on top.
    model_dir = save_sd15(tmp_path / "tiny-sd")
    engine = Engine(Settings(data_dir=tmp_path / "data", engine={"model": str(model_dir), "device": "cpu",
                                                                 "threads": 1}))
    request = GenerationRequest(prompt="a cat", seed=3, steps=2, width=64, height=64, guidance_scale=1.0)
    base = engine.generate(request)
    served = BaseLora(file=str(result.path), tag="diffusion_dpo-v1.abcdef12", model_version=engine.model.version)
    tuned = engine.generate(request.with_base_lora(served))
    assert tuned.images[0].png != base.images[0].png
    assert tuned.model_version == f"{engine.model.version}+diffusion_dpo-v1.abcdef12"
    other_model = BaseLora(file=str(result.path), tag="diffusion_dpo-v1.abcdef12", model_version="f" * 64)
    untouched = engine.generate(request.with_base_lora(other_model))
    assert untouched.images[0].png == base.images[0].png and untouched.model_version == engine.model.version
    user_recipe = Recipe(name="mine", loras=[LoraWeight(file=str(result.path), weight=-1.0)])
    mine = GenerationRequest(prompt="a cat", seed=3, steps=2, width=64, height=64, guidance_scale=1.0, recipe="mine")
    stacked = engine.generate(mine.with_recipe(user_recipe).with_base_lora(served))
    assert stacked.images[0].png != tuned.images[0].png  # the recipe's -1 cancels the base LoRA's +1
    assert stacked.model_version == tuned.model_version


def test_a_stopped_run_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    train, _ = preference_rows(toy_pairs(8))
    config = DiffusionDpoConfig(beta=1000.0, learning_rate=3e-3, steps=6, batch_size=2, rank=4, checkpoint_every=0)
    calls = iter(range(100))
    with pytest.raises(DiffusionDpoStopped, match="stopped at step 3/6"):
        train_diffusion_dpo(sd15_pipeline(), train, config, tmp_path, width=SIZE, height=SIZE,
                            should_stop=lambda: next(calls) >= 3)
    assert (tmp_path / "checkpoint.pt").is_file()
    resumed = train_diffusion_dpo(sd15_pipeline(), train, config, tmp_path, width=SIZE, height=SIZE)
    assert resumed.resumed_from == 3 and len(resumed.losses) == 3 and not (tmp_path / "checkpoint.pt").exists()
    # A run in one go with the same seed ends at the same weights (the checkpoint carries optimizer and RNG).
    whole = train_diffusion_dpo(sd15_pipeline(), train, config, tmp_path / "whole", width=SIZE, height=SIZE)
    from safetensors.torch import load_file

    a, b = load_file(str(resumed.path)), load_file(str(whole.path))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
