"""Tiny random FLUX.1 and SD3 pipelines, built offline, and writers of their transformers as single files in the
original (BFL / SAI) and diffusers key layouts.

Shapes: CLIP encoders of width 32 (tests.tiny), a word-level T5 (tokenizer max length 32), a two-level VAE (scale
factor 2, so sizes are multiples of 4), transformers with one or two blocks. diffusers only converts original
layouts *to* diffusers; the writers here are the inverse, checked in the tests by loading them back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)
from safetensors.torch import save_file
from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

from tests.tiny import TINY_WORDS, make_text_encoder, make_text_encoder_with_projection, make_tokenizer

T5_MAX_LENGTH = 32
FLUX_T5_WIDTH = 32
SD3_T5_WIDTH = 64  # wider than both CLIPs joined (32 + 32), as in the real model (4096 vs 2048)


def make_t5_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer laid out like T5's: ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, end token appended."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = {token: i for i, token in enumerate(["<pad>", "</s>", "<unk>", *TINY_WORDS, ",", "(", ")", ":"])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                                   model_max_length=T5_MAX_LENGTH, padding_side="right")


def make_t5(seed: int, width: int) -> T5EncoderModel:
    torch.manual_seed(seed)
    config = T5Config(vocab_size=len(make_t5_tokenizer()), d_model=width, d_kv=8, d_ff=37, num_layers=2,
                      num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=16,
                      pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    return T5EncoderModel(config).eval()


def make_flow_vae(seed: int) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(block_out_channels=(16, 16), in_channels=3, out_channels=3,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         latent_channels=4, norm_num_groups=8, sample_size=32, shift_factor=0.0609,
                         scaling_factor=1.5035, use_quant_conv=False, use_post_quant_conv=False).eval()


def flux_pipeline(seed: int = 0, guidance_embeds: bool = True) -> FluxPipeline:
    """A tiny FLUX.1 pipeline (dev-like with ``guidance_embeds``, schnell-like without)."""
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=FLUX_T5_WIDTH, pooled_projection_dim=32,
        guidance_embeds=guidance_embeds, axes_dims_rope=(4, 4, 8)).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)
    pipe = FluxPipeline(scheduler=scheduler, vae=make_flow_vae(seed), text_encoder=make_text_encoder(seed),
                        tokenizer=make_tokenizer(), text_encoder_2=make_t5(seed, FLUX_T5_WIDTH),
                        tokenizer_2=make_t5_tokenizer(), transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sd3_pipeline(seed: int = 0, with_t5: bool = True) -> StableDiffusion3Pipeline:
    """A tiny SD3 pipeline with two transformer blocks; ``with_t5`` False leaves the third encoder out."""
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=32, patch_size=1, in_channels=4, num_layers=2, attention_head_dim=8, num_attention_heads=4,
        joint_attention_dim=SD3_T5_WIDTH, caption_projection_dim=32, pooled_projection_dim=64, out_channels=4,
        pos_embed_max_size=48).eval()
    pipe = StableDiffusion3Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=make_flow_vae(seed),
        text_encoder=make_text_encoder_with_projection(seed), tokenizer=make_tokenizer(),
        text_encoder_2=make_text_encoder_with_projection(seed + 1), tokenizer_2=make_tokenizer(),
        text_encoder_3=make_t5(seed, SD3_T5_WIDTH) if with_t5 else None,
        tokenizer_3=make_t5_tokenizer() if with_t5 else None, transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_folder(pipe: Any, folder: Path) -> Path:
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def save_transformer_file(state: dict[str, torch.Tensor], file: Path) -> Path:
    save_file({key: value.contiguous() for key, value in state.items()}, str(file))
    return file


# -- original layouts -----------------------------------------------------------------------------------------------

_FLUX_TOP = {"time_text_embed.timestep_embedder.linear_1": "time_in.in_layer",
             "time_text_embed.timestep_embedder.linear_2": "time_in.out_layer",
             "time_text_embed.text_embedder.linear_1": "vector_in.in_layer",
             "time_text_embed.text_embedder.linear_2": "vector_in.out_layer",
             "time_text_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
             "time_text_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
             "context_embedder": "txt_in", "x_embedder": "img_in", "proj_out": "final_layer.linear"}
_FLUX_DOUBLE = {"norm1.linear": "img_mod.lin", "norm1_context.linear": "txt_mod.lin",
                "attn.norm_q": "img_attn.norm.query_norm", "attn.norm_k": "img_attn.norm.key_norm",
                "attn.norm_added_q": "txt_attn.norm.query_norm", "attn.norm_added_k": "txt_attn.norm.key_norm",
                "ff.net.0.proj": "img_mlp.0", "ff.net.2": "img_mlp.2", "ff_context.net.0.proj": "txt_mlp.0",
                "ff_context.net.2": "txt_mlp.2", "attn.to_out.0": "img_attn.proj", "attn.to_add_out": "txt_attn.proj"}
_FLUX_SINGLE = {"norm.linear": "modulation.lin", "attn.norm_q": "norm.query_norm", "attn.norm_k": "norm.key_norm",
                "proj_out": "linear2"}


def _swap_halves(weight: torch.Tensor) -> torch.Tensor:
    first, second = weight.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def _param(name: str, table: dict[str, str]) -> str:
    module, _, param = name.rpartition(".")
    new = table[module]
    return f"{new}.scale" if new.endswith("_norm") else f"{new}.{param}"


def flux_to_original(model: FluxTransformer2DModel, prefix: str = "") -> dict[str, torch.Tensor]:
    """BFL's key layout of a FLUX.1 transformer (``prefix`` "model.diffusion_model." gives ComfyUI's)."""
    state = {key: value.detach().clone() for key, value in model.state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    for i in range(len(model.transformer_blocks)):
        pre = f"transformer_blocks.{i}."
        for param in ("weight", "bias"):
            out[f"double_blocks.{i}.img_attn.qkv.{param}"] = torch.cat(
                [state.pop(f"{pre}attn.to_{p}.{param}") for p in "qkv"])
            out[f"double_blocks.{i}.txt_attn.qkv.{param}"] = torch.cat(
                [state.pop(f"{pre}attn.add_{p}_proj.{param}") for p in "qkv"])
        for key in [k for k in state if k.startswith(pre)]:
            out[f"double_blocks.{i}.{_param(key.removeprefix(pre), _FLUX_DOUBLE)}"] = state.pop(key)
    for i in range(len(model.single_transformer_blocks)):
        pre = f"single_transformer_blocks.{i}."
        for param in ("weight", "bias"):
            parts = [state.pop(f"{pre}attn.to_{p}.{param}") for p in "qkv"] + [state.pop(f"{pre}proj_mlp.{param}")]
            out[f"single_blocks.{i}.linear1.{param}"] = torch.cat(parts)
        for key in [k for k in state if k.startswith(pre)]:
            out[f"single_blocks.{i}.{_param(key.removeprefix(pre), _FLUX_SINGLE)}"] = state.pop(key)
    for param in ("weight", "bias"):
        out[f"final_layer.adaLN_modulation.1.{param}"] = _swap_halves(state.pop(f"norm_out.linear.{param}"))
    for key in list(state):
        out[_param(key, _FLUX_TOP)] = state.pop(key)
    return {prefix + key: value for key, value in out.items()}


_SD3_TOP = {"pos_embed.proj": "x_embedder.proj", "time_text_embed.timestep_embedder.linear_1": "t_embedder.mlp.0",
            "time_text_embed.timestep_embedder.linear_2": "t_embedder.mlp.2",
            "time_text_embed.text_embedder.linear_1": "y_embedder.mlp.0",
            "time_text_embed.text_embedder.linear_2": "y_embedder.mlp.2", "context_embedder": "context_embedder",
            "proj_out": "final_layer.linear"}
_SD3_BLOCK = {"attn.to_out.0": "x_block.attn.proj", "attn.to_add_out": "context_block.attn.proj",
              "norm1.linear": "x_block.adaLN_modulation.1", "norm1_context.linear": "context_block.adaLN_modulation.1",
              "ff.net.0.proj": "x_block.mlp.fc1", "ff.net.2": "x_block.mlp.fc2",
              "ff_context.net.0.proj": "context_block.mlp.fc1", "ff_context.net.2": "context_block.mlp.fc2"}


def sd3_to_original(model: SD3Transformer2DModel, prefix: str = "model.diffusion_model.") -> dict[str, torch.Tensor]:
    """SAI's MMDiT key layout of an SD3 transformer (no qk-norm, no second attention: SD3 medium's blocks)."""
    state = {key: value.detach().clone() for key, value in model.state_dict().items()}
    out: dict[str, torch.Tensor] = {"pos_embed": state.pop("pos_embed.pos_embed")}
    last = len(model.transformer_blocks) - 1
    for i in range(last + 1):
        pre = f"transformer_blocks.{i}."
        for param in ("weight", "bias"):
            out[f"joint_blocks.{i}.x_block.attn.qkv.{param}"] = torch.cat(
                [state.pop(f"{pre}attn.to_{p}.{param}") for p in "qkv"])
            out[f"joint_blocks.{i}.context_block.attn.qkv.{param}"] = torch.cat(
                [state.pop(f"{pre}attn.add_{p}_proj.{param}") for p in "qkv"])
        for key in [k for k in state if k.startswith(pre)]:
            value = state.pop(key)
            if i == last and key.startswith(pre + "norm1_context."):
                value = _swap_halves(value)  # the last block's context norm is a (shift, scale) AdaLN
            out[f"joint_blocks.{i}.{_param(key.removeprefix(pre), _SD3_BLOCK)}"] = value
    for param in ("weight", "bias"):
        out[f"final_layer.adaLN_modulation.1.{param}"] = _swap_halves(state.pop(f"norm_out.linear.{param}"))
    for key in list(state):
        out[_param(key, _SD3_TOP)] = state.pop(key)
    return {prefix + key: value for key, value in out.items()}
