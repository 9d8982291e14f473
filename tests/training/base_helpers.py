"""Shared fixtures for the embedded-model tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from imageloop.training.base.autoencoder import atomic_torch_save, encode_dataset
from imageloop.training.base.model import ModelSize, build_vae
from imageloop.training.base.sprites import find_emoji_font
from imageloop.training.base.train import BaseTrainConfig, DiffusionTrainer, _save_size, export_pipeline
from imageloop.training.base.train import load_or_build_tokenizer as tokenizer_for

needs_emoji_font = pytest.mark.skipif(
    find_emoji_font() is None,
    reason="Debian font fonts-noto-color-emoji is not installed (apt-get install -y fonts-noto-color-emoji)",
)


def tiny_export(tmp_path: Path, name: str = "model") -> Path:
    """A tiny randomly initialised embedded-model export (fp32) in ``tmp_path / name``; no font needed."""
    tiny = ModelSize.tiny()
    ckpt = tmp_path / f"{name}-ckpt"
    cfg = BaseTrainConfig(data_dir=tmp_path, checkpoint_dir=ckpt, batch_size=2, size=tiny)
    _save_size(ckpt, tiny)
    latents = np.zeros((4, tiny.latent_channels, 16, 16), np.float16)
    trainer = DiffusionTrainer(cfg, tokenizer_for(ckpt), latents, np.zeros((4, 8), np.int16), 1.0, tiny)
    trainer.save(ckpt, keep=1)
    vae = build_vae(tiny)
    encode_dataset(vae, np.zeros((2, 64, 64, 3), np.uint8), ckpt)
    atomic_torch_save({"model": vae.state_dict(), "step": 0, "done": True, "elapsed_s": 0.0}, ckpt / "vae.pt")
    export_pipeline(ckpt, tmp_path / name, dtype=torch.float32)
    return tmp_path / name
