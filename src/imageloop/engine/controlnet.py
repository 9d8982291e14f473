"""Loading ControlNets: diffusers folders, and single ``.safetensors`` files in either key layout.

Most ControlNets people download for A1111 are single files in the original layout (``control_model.*``,
``input_hint_block.*``, ``zero_convs.*``), with no config. A ControlNet's architecture mirrors the base model's
UNet encoder, so the config is derived from the loaded model's UNet (as ``ControlNetModel.from_unet`` does), plus
the conditioning embedding read off the file's tensor shapes. Weights are then converted with diffusers' own
key mapping and loaded strictly: a ControlNet for another base model fails with a ModelLoadError naming it.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from imageloop.config import Settings
from imageloop.engine.loader import error_reason, quiet_loading
from imageloop.engine.model_files import content_hash, read_checkpoint_keys
from imageloop.errors import ImageloopError, ModelLoadError, UnsupportedModelError

ORIGINAL_PREFIX = "control_model."
_HINT = "input_hint_block."
_DIFFUSERS_COND = "controlnet_cond_embedding."
# diffusers' converter expects the standard 4-level hint encoder: conv_out at input_hint_block.14.
_HINT_CONV_OUT = 14


def _controlnet_class() -> Any:
    import diffusers

    return diffusers.ControlNetModel


def controlnet_config_for(unet_config: Mapping[str, Any], conditioning_channels: int,
                          embedding_channels: tuple[int, ...]) -> dict[str, Any]:
    """A ControlNetModel config mirroring ``unet_config`` (the base UNet) with the given conditioning embedding."""
    accepted = set(inspect.signature(_controlnet_class().__init__).parameters) - {"self"}
    config = {key: value for key, value in unet_config.items() if key in accepted and not key.startswith("_")}
    config.update(conditioning_channels=conditioning_channels,
                  conditioning_embedding_out_channels=tuple(embedding_channels))
    return config


def _shapes(path: Path, keys: list[str]) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return {key: tuple(handle.get_slice(key).get_shape()) for key in keys}


def _embedding_from_original(shapes: Mapping[str, tuple[int, ...]], path: Path) -> tuple[int, tuple[int, ...]]:
    indices = sorted(int(key.split(".")[1]) for key in shapes if key.startswith(_HINT) and key.endswith(".weight"))
    if not indices or indices[0] != 0 or indices[-1] != _HINT_CONV_OUT:
        raise UnsupportedModelError(f"{path}: the ControlNet's hint encoder is not the standard one "
                                    f"(input_hint_block layers {indices})")
    first = shapes[f"{_HINT}0.weight"]
    channels = [first[0]]
    # After conv_in come pairs (same width, then stride-2 to the next width); the last conv is conv_out.
    for index in indices[1:-1][1::2]:
        channels.append(shapes[f"{_HINT}{index}.weight"][0])
    return first[1], tuple(channels)


def _embedding_from_diffusers(shapes: Mapping[str, tuple[int, ...]]) -> tuple[int, tuple[int, ...]]:
    first = shapes[f"{_DIFFUSERS_COND}conv_in.weight"]
    blocks = sorted(int(key.split(".")[2]) for key in shapes
                    if key.startswith(f"{_DIFFUSERS_COND}blocks.") and key.endswith(".weight"))
    return first[1], (first[0], *(shapes[f"{_DIFFUSERS_COND}blocks.{i}.weight"][0] for i in blocks[1::2]))


def _load_single_file(path: Path, unet_config: Mapping[str, Any], dtype: torch.dtype) -> Any:
    from diffusers.loaders import single_file_utils
    from safetensors.torch import load_file

    convert: Any = single_file_utils.convert_controlnet_checkpoint  # diffusers' own LDM -> diffusers key mapping

    keys = read_checkpoint_keys(path)
    original = any(key.startswith((ORIGINAL_PREFIX, _HINT)) for key in keys)
    if not original and f"{_DIFFUSERS_COND}conv_in.weight" not in keys:
        raise UnsupportedModelError(f"{path}: not a ControlNet (no input_hint_block / controlnet_cond_embedding "
                                    "tensors)")
    if original:
        local = {key.removeprefix(ORIGINAL_PREFIX): key for key in keys}
        shapes = dict(zip(local, _shapes(path, list(local.values())).values(), strict=True))
        conditioning_channels, embedding = _embedding_from_original(shapes, path)
    else:
        conditioning_channels, embedding = _embedding_from_diffusers(_shapes(path, keys))
    config = controlnet_config_for(unet_config, conditioning_channels, embedding)
    state = load_file(str(path))
    if original:
        state = convert(state, config)
    with torch.device("meta"):
        model = _controlnet_class().from_config(config)
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
    return model


def resolve_controlnet_path(spec: str | Path, settings: Settings) -> Path:
    """Where ControlNet ``spec`` lives: a path, or a name under ``settings.models_dir``."""
    path = Path(spec).expanduser()
    if not path.exists() and (settings.models_dir / str(spec)).exists():
        path = settings.models_dir / str(spec)
    if not path.exists():
        raise ModelLoadError(f"ControlNet {str(spec)!r} not found: {path} does not exist")
    return path


def load_controlnet(spec: str | Path, settings: Settings, device: torch.device, dtype: torch.dtype,
                    unet_config: Mapping[str, Any]) -> tuple[Any, str]:
    """Load a ControlNet for a base model whose UNet has ``unet_config``; returns it on ``device`` and its hash.

    ``spec`` is a diffusers folder (``config.json``) or a ``.safetensors`` file in the original or diffusers key
    layout. ModelLoadError / UnsupportedModelError name the path and the reason.
    """
    path = resolve_controlnet_path(spec, settings)
    if path.is_dir() and not (path / "config.json").is_file():
        raise ModelLoadError(f"{path}: not a ControlNet folder (no config.json)")
    try:
        with quiet_loading():
            if path.is_dir():
                model = _controlnet_class().from_pretrained(path, torch_dtype=dtype, local_files_only=True)
            else:
                model = _load_single_file(path, unet_config, dtype)
    except ImageloopError:
        raise
    except Exception as exc:  # shape mismatches (another base model), missing tensors, bad configs
        raise ModelLoadError(f"{path}: cannot load the ControlNet: {error_reason(exc)}") from exc
    return model.to(device).eval(), content_hash(path)


def check_controlnet_fits(controlnet: Any, unet: Any, spec: object) -> None:
    """ModelLoadError unless the ControlNet's config (``controlnet``) fits the model's UNet config (``unet``): one made
    for another base model (SD1.5 vs SDXL) would fail deep inside the pipeline."""
    for key in ("cross_attention_dim", "addition_embed_type", "in_channels"):
        if controlnet.get(key) != unet.get(key):
            raise ModelLoadError(f"ControlNet {spec} does not fit the loaded model: its {key} is "
                                 f"{controlnet.get(key)!r}, the model's is {unet.get(key)!r}")
