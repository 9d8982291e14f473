"""A wider autoencoder for the embedded model's latent space: the diffusion model (and its few-step student) keep
their latents; only the pixels those latents decode to change.

Why: the 0.7M-parameter autoencoder's reconstructions are soft and draw a small coloured speck in the bottom-left
corner of many images, and a wider decoder at 64x64 costs about the same on a CPU (its convolutions are small
enough that per-layer overhead dominates). Retraining the whole autoencoder would move the latent space and
with it every diffusion model trained on it, so the new one is fitted to the old latent space instead.

Stages (each resumable, each with its own checkpoint in the checkpoint folder):
1. decoder: the wide autoencoder's decoder learns to decode the old encoder's latents of the training images,
   jittered by up to ``latent_noise`` (the diffusion model's latents are never exact encodings), back to the images;
2. encoder: its encoder learns to reproduce the old encoder's moments (mean and log-variance), so img2img and
   anything else that encodes an image lands in the same latent space;
3. export: a copy of a model folder with the new autoencoder in ``vae/``.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL
from tqdm import tqdm

from imageloop.errors import TrainingError
from imageloop.training.base.autoencoder import atomic_torch_save, images_to_tensor, train_autoencoder
from imageloop.training.base.model import build_vae, use_bf16
from imageloop.training.base.seed import size_of_export
from imageloop.training.base.train import DECODER_LATENT_NOISE, encoded_dataset

_Vae: Any = AutoencoderKL


@dataclass
class DecoderConfig:
    """Settings of one `imageloop train decoder` run."""

    model_dir: Path = field(metadata={"help": "The exported model whose autoencoder is widened."})
    data_dir: Path = field(metadata={"help": "Dataset folder; rendered deterministically when missing."})
    checkpoint_dir: Path = field(metadata={"help": "Checkpoints and cached latents."})
    channels: tuple[int, ...] = field(default=(32, 64, 128), metadata={"help": "Widths of the new autoencoder."})
    decoder_minutes: float = field(default=30.0, metadata={"help": "Total decoder training (raise to go on)."})
    encoder_minutes: float = field(default=5.0, metadata={"help": "Total encoder fitting."})
    dataset_size: int = field(default=50_000, metadata={"help": "Training images rendered into data_dir."})
    latent_noise: float = field(default=DECODER_LATENT_NOISE, metadata={
        "help": "Strongest latent jitter (scaled units) the decoder learns to ignore."})
    batch_size: int = field(default=16, metadata={"help": "Batch size of both stages."})
    autocast: str = field(default="auto", metadata={"help": "bf16 autocast: auto, bf16, off."})


def _old_vae(model_dir: Path) -> Any:
    if not (model_dir / "vae/config.json").is_file():
        raise TrainingError(f"{model_dir} has no vae/config.json: not an exported embedded model")
    vae = _Vae.from_pretrained(str(model_dir / "vae"), torch_dtype=torch.float32)
    vae.requires_grad_(False)
    vae.train(False)
    return vae


def wide_vae(model_dir: Path, channels: tuple[int, ...]) -> Any:
    """A randomly initialised autoencoder of ``channels`` with the model's latent shape and scaling factor."""
    old = json.loads((model_dir / "vae/config.json").read_text())
    size = replace(size_of_export(model_dir), vae_channels=tuple(channels))
    vae = build_vae(size)
    vae.register_to_config(scaling_factor=float(old["scaling_factor"]))
    return vae


def _training_latents(cfg: DecoderConfig, old: Any) -> tuple[np.ndarray, np.ndarray]:
    data, latents = encoded_dataset(cfg.data_dir, cfg.dataset_size, 0, old, cfg.checkpoint_dir)
    return np.asarray(data.images), latents


def fit_encoder(new: Any, old: Any, images: np.ndarray, checkpoint: Path, minutes: float, batch_size: int = 16,
                bf16: bool = True, seed: int = 0) -> int:
    """Train ``new``'s encoder (and quant conv) to output ``old``'s moments for ``minutes`` in total; return the
    steps done. Resumes from ``checkpoint``; its decoder is left as it is."""
    params = [*new.encoder.parameters(), *new.quant_conv.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    step, elapsed0 = 0, 0.0
    if checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=True)
        new.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, elapsed0 = int(state["step"]), float(state["elapsed_s"])
    start = time.monotonic()
    deadline = start + minutes * 60.0 - elapsed0
    new.train()
    while time.monotonic() < deadline:
        rng = np.random.default_rng([seed, 3, step])
        x = images_to_tensor(images[np.sort(rng.choice(len(images), batch_size, replace=False))])
        with torch.no_grad():
            target = old.quant_conv(old.encoder(x))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            moments = new.quant_conv(new.encoder(x)).float()
        loss = torch.nn.functional.mse_loss(moments, target)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
    atomic_torch_save({"model": new.state_dict(), "optimizer": opt.state_dict(), "step": step,
                       "elapsed_s": elapsed0 + time.monotonic() - start}, checkpoint)
    new.train(False)
    return step


def train_wide_autoencoder(cfg: DecoderConfig) -> Any:
    """Run the decoder then the encoder stage (each up to its total minutes); return the new autoencoder."""
    cfg.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    old = _old_vae(cfg.model_dir)
    images, latents = _training_latents(cfg, old)
    new = wide_vae(cfg.model_dir, cfg.channels)
    bf16 = use_bf16(cfg.autocast)
    with tqdm(desc="decoder", unit="step", mininterval=30) as bar:
        def on_step(step: int, loss: float) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

        train_autoencoder(new, images, checkpoint=cfg.checkpoint_dir / "wide-decoder.pt", lr=1e-3,
                          minutes=cfg.decoder_minutes, latents=latents, batch_size=cfg.batch_size, bf16=bf16,
                          latent_noise=cfg.latent_noise / float(old.config.scaling_factor), on_step=on_step)
    encoder_ckpt = cfg.checkpoint_dir / "wide-encoder.pt"
    if not encoder_ckpt.is_file():  # start the encoder stage from the finished decoder
        atomic_torch_save({"model": new.state_dict(),
                           "optimizer": torch.optim.AdamW([*new.encoder.parameters(),
                                                           *new.quant_conv.parameters()]).state_dict(),
                           "step": 0, "elapsed_s": 0.0}, encoder_ckpt)
    fit_encoder(new, old, images, encoder_ckpt, cfg.encoder_minutes, cfg.batch_size, bf16)
    _keep_decoder(new, cfg.checkpoint_dir / "wide-decoder.pt")
    return new


def _keep_decoder(vae: Any, decoder_checkpoint: Path) -> None:
    """The decoder and post-quant conv from the decoder stage's newest checkpoint (it may have trained on after
    the encoder stage began)."""
    state = torch.load(decoder_checkpoint, weights_only=True)["model"]
    own = vae.state_dict()
    own.update({k: v for k, v in state.items() if k.startswith(("decoder.", "post_quant_conv."))})
    vae.load_state_dict(own)


def export_with_vae(model_dir: Path, vae: Any, out_dir: Path, dtype: torch.dtype = torch.float16) -> None:
    """Copy the model folder ``model_dir`` to ``out_dir`` with ``vae`` as its autoencoder."""
    tmp = out_dir.with_name(out_dir.name + ".export-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(model_dir, tmp)
    shutil.rmtree(tmp / "vae")
    vae.to(dtype=dtype).save_pretrained(str(tmp / "vae"), safe_serialization=True)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.replace(out_dir)
