"""Continuing training of the embedded model from an export when its checkpoints are gone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from imageloop.errors import TrainingError
from imageloop.training.base.autoencoder import _latent_jitter, atomic_torch_save, encode_dataset
from imageloop.training.base.model import ModelSize, build_vae
from imageloop.training.base.seed import seed_from_export, size_of_export
from imageloop.training.base.train import (
    BaseTrainConfig,
    DiffusionTrainer,
    _newest,
    _save_size,
    export_pipeline,
    load_or_build_tokenizer,
)
from tests.training.test_base_train import _labels

TINY = ModelSize.tiny()


def _exported(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A tiny model trained two steps and exported; returns the export folder and its training images."""
    ckpt = tmp_path / "old-ckpt"
    cfg = BaseTrainConfig(data_dir=tmp_path / "data", checkpoint_dir=ckpt, batch_size=4, size=TINY, warmup_steps=1)
    _save_size(ckpt, TINY)
    images = np.random.default_rng(0).integers(0, 255, (16, 64, 64, 3), dtype=np.uint8)
    vae = build_vae(TINY)
    latents = encode_dataset(vae, images, ckpt, chunk=8)
    atomic_torch_save({"model": vae.state_dict(), "step": 3, "done": True, "elapsed_s": 1.0}, ckpt / "vae.pt")
    torch.manual_seed(0)
    trainer = DiffusionTrainer(cfg, load_or_build_tokenizer(ckpt), latents, _labels(16), 1.0, TINY)
    trainer.train_step()
    trainer.train_step()
    trainer.save(ckpt, keep=1)
    export_pipeline(ckpt, tmp_path / "export", dtype=torch.float16)
    return tmp_path / "export", images


def test_seeded_folder_resumes_with_the_exported_weights_and_scaling(tmp_path: Path) -> None:
    export, images = _exported(tmp_path)
    assert size_of_export(export) == TINY
    ckpt = tmp_path / "new-ckpt"
    info = seed_from_export(export, ckpt)
    assert info["step"] == 2 and info["images_seen"] == 8
    old_scale = json.loads((tmp_path / "old-ckpt/latents.json").read_text())["scaling_factor"]

    # re-encoding keeps the export's scaling factor (the UNet was trained with it) rather than re-measuring it
    vae = build_vae(TINY)
    vae.load_state_dict(torch.load(ckpt / "vae.pt", weights_only=True)["model"])
    encode_dataset(vae, images[:8], ckpt, chunk=4)
    assert json.loads((ckpt / "latents.json").read_text()) == {"done": 8, "scaling_factor": pytest.approx(
        old_scale, rel=1e-6)}

    cfg = BaseTrainConfig(data_dir=tmp_path / "data", checkpoint_dir=ckpt, batch_size=4, size=TINY)
    latents = np.load(ckpt / "latents.npy")
    trainer = DiffusionTrainer(cfg, load_or_build_tokenizer(ckpt), latents, _labels(8), old_scale,
                               _save_size(ckpt, ModelSize()))
    newest = _newest(ckpt)
    assert newest is not None
    trainer.load_state_dict(torch.load(newest, weights_only=True))
    assert trainer.step == 2 and trainer.images_seen == 8
    exported_unet = torch.load(tmp_path / "old-ckpt" / newest.name, weights_only=True)["ema_unet"]
    for key, value in trainer.unet.state_dict().items():
        torch.testing.assert_close(value, exported_unet[key].half().float())
    loss = trainer.train_step()
    assert np.isfinite(loss) and trainer.step == 3


def test_seeding_names_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match=r"missing unet/config\.json"):
        seed_from_export(tmp_path, tmp_path / "ckpt")
    export, _ = _exported(tmp_path)
    with pytest.raises(TrainingError, match="already holds checkpoints"):
        seed_from_export(export, tmp_path / "old-ckpt")


def test_latent_jitter_strength_varies_per_sample_up_to_the_limit() -> None:
    z = torch.zeros(256, 8, 16, 16)
    jitter = _latent_jitter(z, 0.5, np.random.default_rng(0))
    stds = jitter.flatten(1).std(dim=1)
    assert float(stds.max()) < 0.55 and float(stds.min()) < 0.05
    assert 0.2 < float(stds.mean()) < 0.3
