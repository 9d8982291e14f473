"""Single-file transformer checkpoints of the flow families (FLUX.1, SD3), loaded with a config folder.

Such a file holds the transformer only, in the original key layout (BFL's, SAI's) or diffusers'; the text encoders,
VAE, tokenizers and scheduler come from a diffusers folder of the same family. A file that bundles a VAE or text
encoders too (SAI's "incl_clips" files) loads with a logged warning: its transformer is used, the folder's other
components. SD3 also runs without its T5 encoder (:func:`left_out_t5`).

FLUX.1 weights in BFL's layout are converted here (:func:`flux_original_to_diffusers`): diffusers' own converter
assumes the released width (3072) when it splits a single block's fused ``linear1``; this one reads the width
from the weights, so fine-tunes and pruned variants of other widths load too. The mapping is the same as
diffusers' (a test checks it against diffusers' converter at the released width).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from imageloop.errors import ModelLoadError, UnsupportedModelError

ORIGINAL_PREFIX = "model.diffusion_model."
TRANSFORMER_CLASSES = {"flux": "FluxTransformer2DModel", "sd3": "SD3Transformer2DModel"}
# Other components some all-in-one files bundle (SAI's "incl_clips" files, ComfyUI checkpoints): VAE, text encoders.
_BUNDLED_PREFIXES = ("first_stage_model.", "vae.", "text_encoders.", "conditioner.", "cond_stage_model.")

_TOP = {
    "time_in.in_layer": "time_text_embed.timestep_embedder.linear_1",
    "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
    "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
    "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
    "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
    "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2",
    "txt_in": "context_embedder",
    "img_in": "x_embedder",
    "final_layer.linear": "proj_out",
}
_DOUBLE = {
    "img_mod.lin": "norm1.linear",
    "txt_mod.lin": "norm1_context.linear",
    "img_attn.norm.query_norm.scale": "attn.norm_q.weight",
    "img_attn.norm.key_norm.scale": "attn.norm_k.weight",
    "txt_attn.norm.query_norm.scale": "attn.norm_added_q.weight",
    "txt_attn.norm.key_norm.scale": "attn.norm_added_k.weight",
    "img_mlp.0": "ff.net.0.proj",
    "img_mlp.2": "ff.net.2",
    "txt_mlp.0": "ff_context.net.0.proj",
    "txt_mlp.2": "ff_context.net.2",
    "img_attn.proj": "attn.to_out.0",
    "txt_attn.proj": "attn.to_add_out",
}
_DOUBLE_QKV = {"img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
               "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj")}
_SINGLE = {
    "modulation.lin": "norm.linear",
    "norm.query_norm.scale": "attn.norm_q.weight",
    "norm.key_norm.scale": "attn.norm_k.weight",
    "linear2": "proj_out",
}
_SINGLE_FUSED = ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")


def is_flux_original(keys: list[str] | set[str]) -> bool:
    """Whether ``keys`` are a FLUX.1 transformer in BFL's layout (optionally under ``model.diffusion_model.``)."""
    return any(key.removeprefix(ORIGINAL_PREFIX).startswith("double_blocks.") for key in keys)


def _swap_shift_scale(weight: torch.Tensor) -> torch.Tensor:
    # BFL's final AdaLN projection yields (shift, scale); diffusers' yields (scale, shift).
    shift, scale = weight.chunk(2, dim=0)
    return torch.cat([scale, shift], dim=0)


def _rename(rest: str, table: dict[str, str]) -> str | None:
    for old, new in table.items():
        if rest == old or rest.startswith(old + "."):
            return new + rest[len(old):]
    return None


def flux_original_to_diffusers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The diffusers ``FluxTransformer2DModel`` state dict for a BFL-layout one; KeyError names a key it cannot
    place (a file of another model)."""
    source = {key.removeprefix(ORIGINAL_PREFIX): value for key, value in state.items()}
    out: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        kind, _, rest = key.partition(".")
        if kind in ("double_blocks", "single_blocks"):
            index, _, rest = rest.partition(".")
            prefix = f"{'transformer_blocks' if kind == 'double_blocks' else 'single_transformer_blocks'}.{index}."
            if kind == "double_blocks" and (fused := _rename(rest, {k: k for k in _DOUBLE_QKV})) is not None:
                name, _, param = fused.rpartition(".")
                for part, tensor in zip(_DOUBLE_QKV[name], value.chunk(3, dim=0), strict=True):
                    out[f"{prefix}{part}.{param}"] = tensor.contiguous()
                continue
            if kind == "single_blocks" and rest.startswith("linear1."):
                inner = source[f"single_blocks.{index}.linear2.weight"].shape[0]
                sizes = [inner, inner, inner, value.shape[0] - 3 * inner]
                for part, tensor in zip(_SINGLE_FUSED, torch.split(value, sizes, dim=0), strict=True):
                    out[f"{prefix}{part}.{rest.removeprefix('linear1.')}"] = tensor.contiguous()
                continue
            renamed = _rename(rest, _DOUBLE if kind == "double_blocks" else _SINGLE)
            if renamed is None:
                raise KeyError(f"{ORIGINAL_PREFIX if key not in state else ''}{key}")
            out[prefix + renamed] = value
        elif key.startswith("final_layer.adaLN_modulation.1."):
            out["norm_out.linear." + key.rpartition(".")[2]] = _swap_shift_scale(value)
        elif (renamed := _rename(key, _TOP)) is not None:
            out[renamed] = value
        else:
            raise KeyError(key)
    return out


def load_transformer_file(path: Path, architecture: str, pipeline_class: Any, config: Path, dtype: torch.dtype) -> Any:
    """A ``pipeline_class`` pipeline with the transformer of single file ``path`` and the rest of ``config``;
    ModelLoadError names a file that leaves transformer weights missing."""
    import diffusers
    from safetensors import safe_open

    transformer_class = getattr(diffusers, TRANSFORMER_CLASSES[architecture])
    source: Any = str(path)
    with safe_open(str(path), framework="pt") as handle:
        keys = list(handle.keys())
    bundled = sorted({key.split(".", 1)[0] for key in keys if key.startswith(_BUNDLED_PREFIXES)})
    if bundled:
        logging.getLogger(__name__).warning(
            "%s also holds %s weights; only its transformer is used, the other components come from %s",
            path, ", ".join(bundled), config)
    if architecture == "flux" and is_flux_original(keys):
        from safetensors.torch import load_file

        try:
            source = flux_original_to_diffusers(load_file(str(path)))
        except KeyError as exc:
            raise UnsupportedModelError(f"{path}: not a FLUX.1 transformer: unexpected key {exc}") from None
    transformer = transformer_class.from_single_file(
        source, config=str(config), subfolder="transformer", torch_dtype=dtype, local_files_only=True)
    missing = [key for key, value in transformer.named_parameters() if value.is_meta]
    if missing:
        raise ModelLoadError(f"{path}: the checkpoint has no weights for {len(missing)} transformer parameters "
                             f"(e.g. {missing[0]}); is the config folder for this model?")
    return pipeline_class.from_pretrained(config, transformer=transformer, torch_dtype=dtype, local_files_only=True,
                                          **left_out_t5(config, architecture))


def left_out_t5(folder: Path, architecture: str) -> dict[str, None]:
    """``from_pretrained`` arguments that leave SD3's T5 encoder out (it is 9 GB) when the folder's
    ``model_index.json`` names none or the folder lacks ``text_encoder_3``; nothing for other families."""
    if architecture != "sd3":
        return {}
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    entry = index.get("text_encoder_3")
    if isinstance(entry, list) and entry and entry[0] is not None and (folder / "text_encoder_3").is_dir():
        return {}
    return {"text_encoder_3": None, "tokenizer_3": None}
