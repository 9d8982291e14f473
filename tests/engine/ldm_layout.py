"""Write a diffusers SD1.5/SDXL pipeline as an original-layout (LDM / A1111) single ``.safetensors`` file.

diffusers only ships the other direction (``from_single_file``), so tests use this to make checkpoints that look
like the ones people download, then load them back through ``imageloop.engine.loader``. The mapping is the inverse
of ``diffusers.loaders.single_file_utils`` (UNet, VAE, CLIP and OpenCLIP text encoders), generic over the number
of blocks so it works for the tiny models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD15_CLIP_PREFIX = "cond_stage_model.transformer.text_model."
SDXL_CLIP_PREFIX = "conditioner.embedders.0.transformer.text_model."
SDXL_OPENCLIP_PREFIX = "conditioner.embedders.1.model."

_RESNET = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
           ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection"))
_UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}


def _rename_resnet(rest: str) -> str:
    for new, old in _RESNET:
        if rest.startswith(new + "."):
            return old + rest[len(new):]
    return rest


def unet_to_ldm(state: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """UNet2DConditionModel keys -> ``model.diffusion_model.*`` keys."""
    per = int(config.layers_per_block) + 1
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        head = ".".join(parts[:2])
        if head in _UNET_TOP or parts[0] in _UNET_TOP:
            top = head if head in _UNET_TOP else parts[0]
            new = _UNET_TOP[top] + key[len(top):]
        elif parts[0] == "down_blocks":
            block, kind, index, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            if kind == "resnets":
                new = f"input_blocks.{1 + block * per + index}.0.{_rename_resnet(rest)}"
            elif kind == "attentions":
                new = f"input_blocks.{1 + block * per + index}.1.{rest}"
            else:  # downsamplers.0.conv.*
                new = f"input_blocks.{(block + 1) * per}.0.op.{'.'.join(parts[5:])}"
        elif parts[0] == "mid_block":
            kind, index, rest = parts[1], int(parts[2]), ".".join(parts[3:])
            new = f"middle_block.{2 * index}.{_rename_resnet(rest)}" if kind == "resnets" else f"middle_block.1.{rest}"
        elif parts[0] == "up_blocks":
            block, kind, index, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            if kind == "resnets":
                new = f"output_blocks.{block * per + index}.0.{_rename_resnet(rest)}"
            elif kind == "attentions":
                new = f"output_blocks.{block * per + index}.1.{rest}"
            else:  # upsamplers.0.conv.*: after the attention when the block has one
                has_attention = any(k.startswith(f"up_blocks.{block}.attentions.") for k in state)
                new = f"output_blocks.{block * per + per - 1}.{2 if has_attention else 1}.{rest}"
        else:
            raise KeyError(f"unexpected UNet key {key}")
        out[UNET_PREFIX + new] = value
    return out


_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def vae_to_ldm(state: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """AutoencoderKL keys -> ``first_stage_model.*`` keys (attention projections as 1x1 convs, like LDM)."""
    num_up = len(config.up_block_types)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
        parts = new.split(".")
        if parts[1] == "down_blocks":
            block, kind, rest = parts[2], parts[3], ".".join(parts[5:])
            new = f"{parts[0]}.down.{block}.{'block.' + parts[4] if kind == 'resnets' else 'downsample'}.{rest}"
        elif parts[1] == "up_blocks":
            block, kind, rest = num_up - 1 - int(parts[2]), parts[3], ".".join(parts[5:])
            new = f"{parts[0]}.up.{block}.{'block.' + parts[4] if kind == 'resnets' else 'upsample'}.{rest}"
        elif parts[1] == "mid_block" and parts[2] == "resnets":
            new = f"{parts[0]}.mid.block_{int(parts[3]) + 1}.{'.'.join(parts[4:])}"
        elif parts[1] == "mid_block":
            rest = ".".join(parts[4:])
            for diffusers_name, ldm_name in _VAE_ATTENTION.items():
                if rest.startswith(diffusers_name + "."):
                    rest = ldm_name + rest[len(diffusers_name):]
            new = f"{parts[0]}.mid.attn_1.{rest}"
            if value.ndim == 2:
                value = value[:, :, None, None]
        out[VAE_PREFIX + new] = value
    return out


def clip_to_ldm(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """CLIPTextModel keys (flattened or under ``text_model.``) -> ``<prefix>*`` keys."""
    return {prefix + key.removeprefix("text_model."): value for key, value in state.items()}


_OPENCLIP_LAYER = (("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj"),
                   ("self_attn.out_proj", "attn.out_proj"))


def open_clip_to_ldm(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """CLIPTextModelWithProjection keys -> OpenCLIP keys (fused q/k/v ``in_proj``, transposed projection)."""
    state = {key.removeprefix("text_model."): value for key, value in state.items()}
    out = {
        prefix + "token_embedding.weight": state.pop("embeddings.token_embedding.weight"),
        prefix + "positional_embedding": state.pop("embeddings.position_embedding.weight"),
        prefix + "ln_final.weight": state.pop("final_layer_norm.weight"),
        prefix + "ln_final.bias": state.pop("final_layer_norm.bias"),
        prefix + "text_projection": state.pop("text_projection.weight").T.contiguous(),
    }
    layers = sorted({int(key.split(".")[2]) for key in state if key.startswith("encoder.layers.")})
    for i in layers:
        src, dst = f"encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[dst + f"attn.in_proj_{kind}"] = torch.cat(
                [state.pop(src + f"self_attn.{p}_proj.{kind}") for p in ("q", "k", "v")], dim=0
            )
            for diffusers_name, openclip_name in _OPENCLIP_LAYER:
                out[dst + f"{openclip_name}.{kind}"] = state.pop(src + f"{diffusers_name}.{kind}")
    state.pop("embeddings.position_ids", None)
    if state:
        raise KeyError(f"unconverted text encoder keys: {sorted(state)[:5]}")
    return out


def controlnet_to_ldm(state: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """ControlNetModel keys -> the original ``control_model.*`` layout (input_hint_block, zero_convs...)."""
    shared_roots = {"time_embedding", "conv_in", "down_blocks", "mid_block", "add_embedding"}
    shared = {key: value for key, value in state.items() if key.split(".")[0] in shared_roots}
    out = {"control_model." + key.removeprefix(UNET_PREFIX): value
           for key, value in unet_to_ldm(shared, config).items()}
    blocks = len({key.split(".")[2] for key in state if key.startswith("controlnet_cond_embedding.blocks.")})
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "controlnet_down_blocks":
            out[f"control_model.zero_convs.{parts[1]}.0.{parts[2]}"] = value
        elif parts[0] == "controlnet_mid_block":
            out[f"control_model.middle_block_out.0.{parts[1]}"] = value
        elif parts[0] == "controlnet_cond_embedding":
            index = {"conv_in": 0, "conv_out": 2 * (blocks + 1)}.get(parts[1])
            if index is None:  # blocks.{j}
                index, parts = 2 * (int(parts[2]) + 1), parts[:2] + parts[3:]
            out[f"control_model.input_hint_block.{index}.{parts[-1]}"] = value
        elif parts[0] not in shared_roots:
            raise KeyError(f"unexpected ControlNet key {key}")
    return out


def pipeline_to_ldm(pipe: Any) -> dict[str, torch.Tensor]:
    """The whole SD1.5 or SDXL pipeline as one original-layout state dict."""
    out = unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config)
    out.update(vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config))
    if getattr(pipe, "text_encoder_2", None) is not None:
        out.update(clip_to_ldm(pipe.text_encoder.state_dict(), SDXL_CLIP_PREFIX))
        out.update(open_clip_to_ldm(pipe.text_encoder_2.state_dict(), SDXL_OPENCLIP_PREFIX))
    else:
        out.update(clip_to_ldm(pipe.text_encoder.state_dict(), SD15_CLIP_PREFIX))
    return out


def save_single_file(pipe: Any, path: Path) -> Path:
    """Write ``pipe`` as an original-layout ``.safetensors`` checkpoint at ``path``."""
    tensors = {key: value.detach().contiguous().clone() for key, value in pipeline_to_ldm(pipe).items()}
    save_file(tensors, str(path))
    return path
