"""Tiny LoRA files for the tiny pipelines of :mod:`tests.tiny`, written offline in the formats users bring.

* :func:`make_diffusers_lora`: PEFT ``LoraConfig`` adapters on a tiny UNet (and text encoders), random A/B
  matrices, saved with ``save_lora_weights`` (diffusers format, with PEFT metadata).
* :func:`kohya_from_diffusers`: the same matrices under kohya-ss key names (``lora_unet_…lora_down.weight`` /
  ``lora_up.weight`` / ``alpha``), so a test can check both formats give the same image.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from diffusers.utils import convert_state_dict_to_diffusers
from peft import LoraConfig, inject_adapter_in_model
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file, save_file

from tests.tiny import make_sd15_unet, make_sdxl_unet, make_text_encoder, make_text_encoder_with_projection

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


def _randomize(module: torch.nn.Module, seed: int, std: float) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * std)


def _adapter_layers(
    module: torch.nn.Module, targets: list[str], rank: int, alpha: float, seed: int, std: float
) -> tuple[dict[str, torch.Tensor], LoraConfig]:
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, init_lora_weights=False)
    inject_adapter_in_model(config, module, adapter_name="default")
    _randomize(module, seed, std)
    return convert_state_dict_to_diffusers(get_peft_model_state_dict(module)), config


def make_diffusers_lora(
    path: Path,
    *,
    arch: str = "sd15",
    seed: int = 1,
    rank: int = 4,
    alpha: float = 8.0,
    unet: bool = True,
    text_encoder: bool = True,
    std: float = 0.3,
) -> Path:
    """Write a diffusers-format LoRA for the tiny ``arch`` ("sd15" or "sdxl") pipeline to ``path``."""
    if arch not in {"sd15", "sdxl"}:
        raise ValueError(f"arch must be 'sd15' or 'sdxl', got {arch!r}")
    kwargs: dict[str, object] = {}
    if unet:
        model = make_sd15_unet() if arch == "sd15" else make_sdxl_unet()
        kwargs["unet_lora_layers"], config = _adapter_layers(model, UNET_TARGETS, rank, alpha, seed, std)
        kwargs["unet_lora_adapter_metadata"] = config.to_dict()
    if text_encoder:
        layers, config = _adapter_layers(make_text_encoder(), TEXT_TARGETS, rank, alpha, seed + 1, std)
        kwargs["text_encoder_lora_layers"], kwargs["text_encoder_lora_adapter_metadata"] = layers, config.to_dict()
        if arch == "sdxl":
            layers, config = _adapter_layers(
                make_text_encoder_with_projection(), TEXT_TARGETS, rank, alpha, seed + 2, std
            )
            kwargs["text_encoder_2_lora_layers"] = layers
            kwargs["text_encoder_2_lora_adapter_metadata"] = config.to_dict()
    pipeline_cls = StableDiffusionPipeline if arch == "sd15" else StableDiffusionXLPipeline
    path.parent.mkdir(parents=True, exist_ok=True)
    pipeline_cls.save_lora_weights(path.parent, weight_name=path.name, **kwargs)
    return path


def _sgm_unet_name(module_path: str, layers_per_block: int = 2) -> str:
    """diffusers UNet attention path -> the SGM/LDM name kohya-ss uses for SDXL (``input_blocks.4.1``...)."""
    per_block = layers_per_block + 1  # SGM counts the down/up sampler as one more input/output block
    match = re.match(r"^(down|up)_blocks\.(\d+)\.attentions\.(\d+)\.", module_path)
    if match:
        block, index = int(match[2]), int(match[3])
        if match[1] == "down":
            sgm = f"input_blocks.{1 + block * per_block + index}"
        else:
            sgm = f"output_blocks.{block * per_block + index}"
        return f"{sgm}.1.{module_path[match.end() :]}"
    if module_path.startswith("mid_block.attentions.0."):
        return "middle_block.1." + module_path.removeprefix("mid_block.attentions.0.")
    raise ValueError(f"no SGM name for {module_path}")


def kohya_from_diffusers(source: Path, target: Path, *, alpha: float, sgm_unet: bool = False) -> Path:
    """Rewrite a :func:`make_diffusers_lora` file under kohya-ss key names with per-layer ``alpha``.

    ``sgm_unet`` uses kohya's SDXL naming (``lora_unet_input_blocks_4_1_…``) instead of the diffusers-style
    names kohya uses for SD1.5. The ``text_encoder``/``text_encoder_2`` prefixes become ``lora_te``/``lora_te2``
    (``lora_te1`` when there is a second encoder).
    """
    tensors = load_file(str(source))
    has_te2 = any(key.startswith("text_encoder_2.") for key in tensors)
    prefixes = {
        "unet": "lora_unet_",
        "text_encoder": "lora_te1_text_model_" if has_te2 else "lora_te_text_model_",
        "text_encoder_2": "lora_te2_text_model_",
    }
    out: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        component, rest = key.split(".", 1)
        match = re.match(r"(.+?)\.(lora|lora_linear_layer)\.(down|up)\.weight$", rest)
        if match is None:
            raise ValueError(f"unexpected key {key}")
        module_path, direction = match[1], match[3]
        if component == "unet" and sgm_unet:
            module_path = _sgm_unet_name(module_path)
        module_path = module_path.removeprefix("text_model.")  # the prefix below adds it back once
        name = prefixes[component] + module_path.replace(".", "_")
        out[f"{name}.lora_{direction}.weight"] = tensor.contiguous()
        out[f"{name}.alpha"] = torch.tensor(alpha)
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(target))
    return target
