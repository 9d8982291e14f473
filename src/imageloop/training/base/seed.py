"""Continue training from an exported model when its checkpoints are gone (a new machine, a lost disk).

An export holds everything training needs except the optimizer's moments: the EMA weights of the UNet and the
text encoder, the final autoencoder, the tokenizer and the latent scaling factor. :func:`seed_from_export`
writes them into an empty checkpoint folder in the layout :func:`imageloop.training.base.train.run_training`
resumes from: the live weights start as the EMA weights, the autoencoder is marked final (so the latents are
re-encoded with the same encoder and the same scaling factor), and the step counters carry on from the export's
``training.json``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel

from imageloop.errors import TrainingError
from imageloop.training.base.autoencoder import atomic_torch_save
from imageloop.training.base.model import ModelSize
from imageloop.training.base.train import _save_size

_UNet: Any = UNet2DConditionModel
_Vae: Any = AutoencoderKL

REQUIRED = ("unet/config.json", "vae/config.json", "text_encoder/config.json", "tokenizer/tokenizer.json",
            "training.json")


def _fp32(module: Any) -> dict[str, torch.Tensor]:
    return {k: v.float().clone() for k, v in module.state_dict().items()}


def size_of_export(export_dir: Path) -> ModelSize:
    """The network sizes an export was built with, read from its component configs."""
    unet = json.loads((export_dir / "unet/config.json").read_text())
    vae = json.loads((export_dir / "vae/config.json").read_text())
    text = json.loads((export_dir / "text_encoder/config.json").read_text())
    return ModelSize(
        unet_channels=tuple(unet["block_out_channels"]), unet_layers=int(unet["layers_per_block"]),
        text_hidden=int(text["hidden_size"]), text_layers=int(text["num_hidden_layers"]),
        vae_channels=tuple(vae["block_out_channels"]), latent_channels=int(vae["latent_channels"]),
        vae_mid_attention=bool(vae.get("mid_block_add_attention", True)),
    )


def seed_from_export(export_dir: Path, checkpoint_dir: Path) -> dict[str, Any]:
    """Write ``checkpoint_dir`` (which must hold no checkpoint) from the export in ``export_dir``.

    Returns the export's training info (checkpoint name, step, images seen, minutes).
    """
    missing = [name for name in REQUIRED if not (export_dir / name).is_file()]
    if missing:
        raise TrainingError(f"{export_dir} is not an exported embedded model: missing {', '.join(missing)}")
    if any(checkpoint_dir.glob("*.pt")):
        raise TrainingError(f"{checkpoint_dir} already holds checkpoints; seed an empty folder")
    info = json.loads((export_dir / "training.json").read_text())
    size = size_of_export(export_dir)
    _save_size(checkpoint_dir, size)
    shutil.copytree(export_dir / "tokenizer", checkpoint_dir / "tokenizer", dirs_exist_ok=True)
    _seed_autoencoder(export_dir, checkpoint_dir)
    _seed_diffusion(export_dir, checkpoint_dir, info)
    return dict(info)


def _seed_autoencoder(export_dir: Path, checkpoint_dir: Path) -> None:
    vae = _Vae.from_pretrained(str(export_dir / "vae"))
    weights = _fp32(vae)
    optimizer = torch.optim.AdamW(vae.parameters())
    atomic_torch_save({"model": weights, "optimizer": optimizer.state_dict(), "step": 0, "elapsed_s": 0.0,
                       "done": True}, checkpoint_dir / "vae.pt")
    # The UNet was trained on latents scaled by this factor: re-encoding must keep it, not re-measure it.
    (checkpoint_dir / "latents.json").write_text(json.dumps(
        {"done": 0, "scaling_factor": float(vae.config.scaling_factor)}))


def _seed_diffusion(export_dir: Path, checkpoint_dir: Path, info: dict[str, Any]) -> None:
    unet = _UNet.from_pretrained(str(export_dir / "unet"))
    text = CLIPTextModel.from_pretrained(str(export_dir / "text_encoder"))
    params = [*unet.parameters(), *text.parameters()]
    optimizer = torch.optim.AdamW(params)
    unet_w, text_w = _fp32(unet), _fp32(text)
    step = int(info.get("step", 0))
    state = {
        "unet": unet_w, "text_encoder": text_w, "ema_unet": unet_w, "ema_text": text_w,
        "optimizer": optimizer.state_dict(), "step": step, "images_seen": int(info.get("images_seen", 0)),
        "elapsed_s": float(info.get("training_minutes", 0.0)) * 60.0,
    }
    atomic_torch_save(state, checkpoint_dir / f"diffusion-{step:08d}.pt")
