"""Component configurations of the embedded model (a standard diffusers StableDiffusionPipeline).

Latent diffusion: a small AutoencoderKL maps 64x64 RGB to 16x16x8 latents (f=4), so each UNet step costs a
fraction of a pixel-space one. The UNet has cross-attention at every latent resolution and pools the text
into its time embedding (``addition_embed_type="text"``), which carries scene-wide attributes (colour mode,
mood, time) to every block. Noise schedule: v-prediction with zero terminal SNR so that very dark or very
flat images (night, bleak, fog) can be generated; sampling uses "trailing" timesteps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from imageloop.errors import TrainingError
from imageloop.training.base.scenes import IMAGE_SIZE
from imageloop.training.base.tokenizer import MAX_LENGTH

# diffusers classes are untyped for mypy; they are called through these Any-typed names.
_UNet: Any = UNet2DConditionModel
_Vae: Any = AutoencoderKL
_Ddim: Any = DDIMScheduler

LATENT_SIZE = IMAGE_SIZE // 4


@dataclass(frozen=True)
class ModelSize:
    """Widths of the three networks; ``tiny()`` is for tests."""

    unet_channels: tuple[int, ...] = (64, 128, 192)
    unet_layers: int = 1
    text_hidden: int = 256
    text_layers: int = 3
    vae_channels: tuple[int, ...] = (16, 32, 64)
    latent_channels: int = 8
    vae_mid_attention: bool = False

    @classmethod
    def tiny(cls) -> ModelSize:
        """Smallest sizes that still exercise every code path (tests)."""
        return cls(unet_channels=(32, 32, 32), unet_layers=1, text_hidden=32, text_layers=1, vae_channels=(8, 8, 16))


def text_encoder_config(vocab_size: int, size: ModelSize, bos_id: int, eos_id: int, pad_id: int) -> CLIPTextConfig:
    """A small CLIP text transformer; ``eos_token_id`` tells CLIP where to pool (the first eos)."""
    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=size.text_hidden,
        intermediate_size=size.text_hidden * 4,
        projection_dim=size.text_hidden,
        num_hidden_layers=size.text_layers,
        num_attention_heads=max(1, size.text_hidden // 64),
        max_position_embeddings=MAX_LENGTH,
        hidden_act="gelu",
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )


def build_text_encoder(vocab_size: int, size: ModelSize, bos_id: int, eos_id: int, pad_id: int) -> CLIPTextModel:
    """A randomly initialised text encoder."""
    return CLIPTextModel(text_encoder_config(vocab_size, size, bos_id, eos_id, pad_id))


def build_unet(size: ModelSize) -> Any:
    """A randomly initialised latent ``UNet2DConditionModel`` conditioned on the text encoder's hidden states."""
    n = len(size.unet_channels)
    groups = min(32, min(size.unet_channels))
    return _UNet(
        sample_size=LATENT_SIZE,
        in_channels=size.latent_channels,
        out_channels=size.latent_channels,
        down_block_types=("CrossAttnDownBlock2D",) * n,
        up_block_types=("CrossAttnUpBlock2D",) * n,
        block_out_channels=size.unet_channels,
        layers_per_block=size.unet_layers,
        cross_attention_dim=size.text_hidden,
        attention_head_dim=max(1, min(size.unet_channels) // 32),
        norm_num_groups=groups,
        addition_embed_type="text",
        addition_embed_type_num_heads=max(1, size.text_hidden // 64),
    )


def build_vae(size: ModelSize) -> Any:
    """A randomly initialised f=4 ``AutoencoderKL`` for 64x64 RGB."""
    n = len(size.vae_channels)
    return _Vae(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=size.vae_channels,
        layers_per_block=1,
        latent_channels=size.latent_channels,
        mid_block_add_attention=size.vae_mid_attention,
        norm_num_groups=min(16, min(size.vae_channels)),
        sample_size=IMAGE_SIZE,
    )


def scheduler_config() -> dict[str, Any]:
    """The noise schedule used in training and saved with the pipeline."""
    return {
        "num_train_timesteps": 1000,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "prediction_type": "v_prediction",
        "rescale_betas_zero_snr": True,
        "timestep_spacing": "trailing",
        "clip_sample": False,
        "set_alpha_to_one": False,
        "steps_offset": 1,
    }


def build_scheduler() -> Any:
    """The default sampler (``DDIMScheduler``) with the training noise schedule."""
    return _Ddim(**scheduler_config())


TRAIN_AUTOCAST = ("auto", "bf16", "off")


def use_bf16(setting: str) -> bool:
    """Whether training runs under bf16 autocast: ``auto`` only where bf16 measures faster than fp32 (CPUs with
    AMX; AVX512-BF16 alone can be slower than fp32)."""
    if setting not in TRAIN_AUTOCAST:
        raise TrainingError(f"autocast must be one of {', '.join(TRAIN_AUTOCAST)}, not {setting!r}")
    if setting == "auto":
        from imageloop.engine.autocast import bf16_pays_off

        return bf16_pays_off()
    return setting == "bf16"
