"""The wider autoencoder fitted to an export's latent space: tiny random model, seconds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline

from imageloop.errors import TrainingError
from imageloop.training.base.decoder import export_with_vae, fit_encoder, wide_vae
from tests.training.base_helpers import tiny_export


def test_the_encoder_learns_the_old_moments_and_the_export_carries_the_new_autoencoder(tmp_path: Path) -> None:
    model = tiny_export(tmp_path)
    old = AutoencoderKL.from_pretrained(str(model / "vae"))
    new = wide_vae(model, (16, 16, 32))
    assert new.config.scaling_factor == old.config.scaling_factor
    assert new.config.latent_channels == old.config.latent_channels
    images = np.random.default_rng(0).integers(0, 255, (8, 64, 64, 3), dtype=np.uint8)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1

    def error() -> float:
        with torch.no_grad():
            return float(torch.nn.functional.mse_loss(new.quant_conv(new.encoder(x)), old.quant_conv(old.encoder(x))))

    before = error()
    steps = fit_encoder(new, old, images, tmp_path / "enc.pt", minutes=0.05, batch_size=4, bf16=False)
    assert steps > 0 and error() < before
    export_with_vae(model, new, tmp_path / "out", dtype=torch.float32)
    pipe = StableDiffusionPipeline.from_pretrained(str(tmp_path / "out"), dtype=torch.float32)
    assert list(pipe.vae.config.block_out_channels) == [16, 16, 32]
    assert json.loads((tmp_path / "out" / "imageloop.json").read_text()) == \
        json.loads((model / "imageloop.json").read_text())


def test_a_folder_without_an_autoencoder_is_named(tmp_path: Path) -> None:
    from imageloop.training.base.decoder import DecoderConfig, train_wide_autoencoder

    with pytest.raises(TrainingError, match="has no vae"):
        train_wide_autoencoder(DecoderConfig(model_dir=tmp_path, data_dir=tmp_path / "d",
                                             checkpoint_dir=tmp_path / "c"))
