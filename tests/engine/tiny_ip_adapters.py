"""Tiny IP-Adapter files for the tiny pipelines of :mod:`tests.tiny`, written offline in the published layout.

* :func:`save_image_encoder`: a random ``CLIPVisionModelWithProjection`` folder (32x32 images, 8x8 patches).
* :func:`save_ip_adapter`: a ``.safetensors`` file of ``image_proj.*`` (4 image tokens from the encoder's
  projection) and ``ip_adapter.{i}.to_k_ip/to_v_ip`` for every cross-attention layer of a UNet, numbered as the
  published adapters number them (1, 3, 5, ... in the UNet's attention-processor order), shaped from its layers.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

IMAGE_TOKENS = 4
ENCODER_PROJECTION = 24


def save_image_encoder(folder: Path, seed: int = 0) -> Path:
    """A tiny random CLIP vision encoder with projection, saved as a transformers folder."""
    torch.manual_seed(seed)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                              image_size=32, patch_size=8, projection_dim=ENCODER_PROJECTION)
    CLIPVisionModelWithProjection(config).eval().save_pretrained(folder)
    return folder


def ip_adapter_state(unet: UNet2DConditionModel, seed: int = 0, std: float = 0.5) -> dict[str, torch.Tensor]:
    """Random IP-Adapter tensors (published key names) that fit ``unet``."""
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=generator) * std

    cross = int(unet.config.cross_attention_dim)
    state = {
        "image_proj.proj.weight": randn(IMAGE_TOKENS * cross, ENCODER_PROJECTION),
        "image_proj.proj.bias": randn(IMAGE_TOKENS * cross),
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }
    key = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue  # self-attention has no image branch
        attention = unet.get_submodule(name.removesuffix(".processor"))
        to_k = attention.to_k
        assert isinstance(to_k, torch.nn.Linear)
        for part in ("to_k_ip", "to_v_ip"):
            state[f"ip_adapter.{key}.{part}.weight"] = randn(to_k.out_features, to_k.in_features)
        key += 2
    return state


def save_ip_adapter(path: Path, unet: UNet2DConditionModel, seed: int = 0) -> Path:
    """Write :func:`ip_adapter_state` for ``unet`` to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in ip_adapter_state(unet, seed).items()}, str(path))
    return path
