"""Tiny, randomly initialised Stable Diffusion components built offline, for fast tests.

Everything here is shaped like the real thing (SD1.5, SDXL, ControlNet) but small enough that a pipeline call
at 64x64 with a few steps takes well under a second on a CPU. Nothing is downloaded: the CLIP tokenizer is built
from a byte-level vocabulary plus merges for a short word list (:data:`TINY_WORDS` are single tokens).

Shapes to know:

* text encoders: hidden size :data:`TEXT_HIDDEN` (32), max length 77; SDXL's second encoder has a projection
  of :data:`TEXT_HIDDEN` so SDXL's cross-attention dim is 64;
* VAE: two blocks, so the latent scale factor is 2 (a 64x64 image has 32x32 latents);
* UNet: ``block_out_channels=(32, 64)``, like diffusers' own ``get_dummy_components``.

Builders take a ``seed`` so two calls with the same seed give identical weights.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    EulerDiscreteScheduler,
    StableDiffusionControlNetPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    PreTrainedTokenizerFast,
)

TEXT_HIDDEN = 32
MAX_LENGTH = 77
SDXL_SINGLE_FILE_HIDDEN_2 = 48  # second SDXL encoder width for single-file tests (see sdxl_components)
TINY_SIZE = 64  # default pixel size of the tiny pipelines (latents 32x32)
GUIDANCE_EMBEDDING_DIM = 16  # time_cond_proj_dim of the tiny guidance-embedded UNet (LCM models: 256)
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"

# Words that become exactly one token each (handy for prompt-weighting tests).
TINY_WORDS: tuple[str, ...] = (
    "a", "an", "the", "of", "in", "on", "with", "and", "photo", "painting", "portrait", "cat", "dog", "bird",
    "house", "tree", "red", "blue", "green", "white", "black", "dark", "bright", "sunset", "forest", "city",
    "night", "beach", "mountain", "river", "sky", "cloud", "flower", "woman", "man", "girl", "boy", "car",
    "castle", "dragon", "ship", "sea", "snow", "rain", "detailed", "masterpiece", "best", "quality", "ugly",
    "blurry", "lowres", "bad", "hands", "style", "cinematic", "lighting", "art", "by", "oil", "watercolor",
)  # fmt: skip


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character map."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


def tiny_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP-style BPE vocabulary: all bytes (plain and word-final), merges for TINY_WORDS, specials last.

    The start/end tokens get the two highest ids, as in real CLIP (the text model finds the end token by argmax).
    """
    symbols = list(_bytes_to_unicode().values())
    vocab_list = symbols + [s + "</w>" for s in symbols]
    merges: list[tuple[str, str]] = []
    for word in TINY_WORDS:
        parts = [*word[:-1], word[-1] + "</w>"]
        current = parts[0]
        for part in parts[1:]:
            merge = (current, part)
            current += part
            if merge not in merges:
                merges.append(merge)
            if current not in vocab_list:
                vocab_list.append(current)
    vocab_list += [BOS_TOKEN, EOS_TOKEN]
    return {token: i for i, token in enumerate(vocab_list)}, merges


def tiny_vocab_size() -> int:
    """Number of tokens of :func:`make_tokenizer`'s vocabulary."""
    return len(tiny_vocab_and_merges()[0])


def write_tokenizer_files(folder: Path) -> Path:
    """Write ``vocab.json`` + ``merges.txt`` (the classic CLIP files) into ``folder`` and return it."""
    vocab, merges = tiny_vocab_and_merges()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    return folder


def make_tokenizer(pad_token: str = EOS_TOKEN) -> CLIPTokenizer:
    """A tiny CLIPTokenizer (max length 77) built in memory; ``save_pretrained`` it to get files."""
    vocab, merges = tiny_vocab_and_merges()
    return CLIPTokenizer(
        vocab=vocab,
        merges=merges,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=pad_token,
        model_max_length=MAX_LENGTH,
    )


def make_word_tokenizer(max_length: int = 32) -> PreTrainedTokenizerFast:
    """A word-level tokenizer like the embedded model's: TINY_WORDS plus one token per CJK character seen in
    ``雨中的猫黑白``, specials ``<pad> <unk> <|startoftext|> <|endoftext|>`` (ids 0..3), short ``max_length``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    specials = ["<pad>", "<unk>", BOS_TOKEN, EOS_TOKEN]
    vocab = {token: i for i, token in enumerate([*specials, *TINY_WORDS, *"雨中的猫黑白", ",", "(", ")", ":"])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.BertNormalizer(handle_chinese_chars=True, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A {EOS_TOKEN}", special_tokens=[(BOS_TOKEN, 2), (EOS_TOKEN, 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS_TOKEN, eos_token=EOS_TOKEN, pad_token="<pad>", unk_token="<unk>",
        model_max_length=max_length, padding_side="right",
    )


def sd15_word_pipeline(seed: int = 0, max_length: int = 32) -> StableDiffusionPipeline:
    """A tiny SD1.5 pipeline whose text side looks like the embedded model's (own word-level tokenizer)."""
    tokenizer = make_word_tokenizer(max_length)
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=TEXT_HIDDEN, intermediate_size=37, num_attention_heads=4,
        num_hidden_layers=2, max_position_embeddings=max_length, bos_token_id=2, eos_token_id=3, pad_token_id=0,
    )
    components = sd15_components(seed)
    components.update(tokenizer=tokenizer, text_encoder=CLIPTextModel(config).eval())
    pipe = StableDiffusionPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _text_config(hidden: int = TEXT_HIDDEN, projection_dim: int = TEXT_HIDDEN) -> CLIPTextConfig:
    vocab_size = tiny_vocab_size()
    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=5,
        max_position_embeddings=MAX_LENGTH,
        layer_norm_eps=1e-5,
        hidden_act="gelu",
        projection_dim=projection_dim,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )


def make_text_encoder(seed: int = 0) -> CLIPTextModel:
    """A tiny CLIPTextModel (hidden 32, 5 layers) matching :func:`make_tokenizer`."""
    torch.manual_seed(seed)
    return CLIPTextModel(_text_config()).eval()


def make_text_encoder_with_projection(seed: int = 0, hidden: int = TEXT_HIDDEN) -> CLIPTextModelWithProjection:
    """A tiny CLIPTextModelWithProjection (SDXL's second encoder; pooled output of size 32)."""
    torch.manual_seed(seed)
    return CLIPTextModelWithProjection(_text_config(hidden=hidden)).eval()


def make_vae(seed: int = 0, levels: int = 2) -> AutoencoderKL:
    """An AutoencoderKL with 4 latent channels; ``levels`` 2 gives scale factor 2, ``levels`` 4 the real 8."""
    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=(32, 64) if levels == 2 else (32,) * levels,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=TINY_SIZE,
    ).eval()


def make_scheduler() -> EulerDiscreteScheduler:
    """SD's usual scaled-linear Euler scheduler."""
    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )


def make_sd15_unet(seed: int = 0) -> UNet2DConditionModel:
    """An SD1.5-shaped UNet: cross-attention dim 32, block channels (32, 64)."""
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=TINY_SIZE // 2,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_HIDDEN,
        attention_head_dim=8,
        norm_num_groups=32,
    ).eval()


def make_sdxl_unet(seed: int = 0, text_hidden_2: int = TEXT_HIDDEN) -> UNet2DConditionModel:
    """An SDXL-shaped UNet: text_time additional embeddings, linear projections, cross-attention dim 32 + 32."""
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=TINY_SIZE // 2,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + TEXT_HIDDEN,  # 6 size/crop ids x 8 + pooled text
        cross_attention_dim=TEXT_HIDDEN + text_hidden_2,
        norm_num_groups=32,
    ).eval()


def make_controlnet(
    seed: int = 0, unet: UNet2DConditionModel | None = None, embedding_channels: tuple[int, ...] = (16, 32)
) -> ControlNetModel:
    """A ControlNet matching the tiny SD1.5 UNet (or built from ``unet``, copying its encoder weights).

    Its conditioning embedding downsamples by 2 (``embedding_channels`` (16, 32)), matching the tiny VAE's scale
    factor, so a control image of the output size lines up with the latents; real ControlNets use
    (16, 32, 96, 256), a factor of 8 (see :func:`make_vae`'s ``levels``). A fresh ControlNet's output
    convolutions are zero (no effect until trained); here they get small random weights so the control image
    visibly changes the result.
    """
    torch.manual_seed(seed)
    if unet is not None:
        controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=embedding_channels)
    else:
        controlnet = ControlNetModel(
            block_out_channels=(32, 64),
            layers_per_block=2,
            in_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            cross_attention_dim=TEXT_HIDDEN,
            attention_head_dim=8,
            conditioning_embedding_out_channels=embedding_channels,
            norm_num_groups=32,
        )
    zero_convs = [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block,
                  controlnet.controlnet_cond_embedding.conv_out]
    with torch.no_grad():
        for conv in zero_convs:
            torch.nn.init.normal_(conv.weight, std=0.2)
    return controlnet.eval()


def sd15_components(seed: int = 0) -> dict[str, Any]:
    """Keyword arguments for ``StableDiffusionPipeline(**components)`` (no safety checker)."""
    return {
        "unet": make_sd15_unet(seed),
        "scheduler": make_scheduler(),
        "vae": make_vae(seed),
        "text_encoder": make_text_encoder(seed),
        "tokenizer": make_tokenizer(),
        "safety_checker": None,
        "feature_extractor": None,
        "image_encoder": None,
        "requires_safety_checker": False,
    }


def sdxl_components(seed: int = 0, text_hidden_2: int = TEXT_HIDDEN) -> dict[str, Any]:
    """Keyword arguments for ``StableDiffusionXLPipeline(**components)``.

    The second tokenizer pads with ``!`` like the real SDXL one does. ``text_hidden_2`` sets the second encoder's
    width (real SDXL: 768 vs 1280); diffusers' single-file loader tells the encoders apart by width, so tests of
    original-layout checkpoints need it to differ from :data:`TEXT_HIDDEN` (e.g. :data:`SDXL_SINGLE_FILE_HIDDEN_2`).
    """
    return {
        "unet": make_sdxl_unet(seed, text_hidden_2),
        "scheduler": make_scheduler(),
        "vae": make_vae(seed),
        "text_encoder": make_text_encoder(seed),
        "text_encoder_2": make_text_encoder_with_projection(seed + 1, text_hidden_2),
        "tokenizer": make_tokenizer(),
        "tokenizer_2": make_tokenizer(pad_token="!"),
        "image_encoder": None,
        "feature_extractor": None,
        "force_zeros_for_empty_prompt": True,
    }


def sd15_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    """A tiny SD1.5 text-to-image pipeline on the CPU."""
    pipe = StableDiffusionPipeline(**sd15_components(seed))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sdxl_pipeline(seed: int = 0, text_hidden_2: int = TEXT_HIDDEN) -> StableDiffusionXLPipeline:
    """A tiny SDXL text-to-image pipeline on the CPU."""
    pipe = StableDiffusionXLPipeline(**sdxl_components(seed, text_hidden_2))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sd15_controlnet_pipeline(seed: int = 0) -> StableDiffusionControlNetPipeline:
    """A tiny SD1.5 ControlNet pipeline (control image at the output size)."""
    components = sd15_components(seed)
    components["controlnet"] = make_controlnet(seed)
    pipe = StableDiffusionControlNetPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_sd15(folder: Path, seed: int = 0, model_defaults: dict[str, Any] | None = None) -> Path:
    """Save a tiny SD1.5 pipeline as a diffusers folder; ``model_defaults`` is written as ``imageloop.json``."""
    return _save(sd15_pipeline(seed), folder, model_defaults)


def save_sd15_guidance_embedded(folder: Path, seed: int = 0, model_defaults: dict[str, Any] | None = None) -> Path:
    """Save a tiny SD1.5 pipeline whose UNet is guidance-embedded, as LCM-distilled models are: ``time_cond_proj_dim``
    set (:data:`GUIDANCE_EMBEDDING_DIM`), its projection randomly initialised so the guidance changes the image. The
    stored scheduler stays SD's Euler; ``model_defaults`` is written as ``imageloop.json``."""
    components = _with_guidance_embedding(sd15_components(seed), seed)
    return _save(StableDiffusionPipeline(**components), folder, model_defaults)


def save_sdxl_guidance_embedded(folder: Path, seed: int = 0) -> Path:
    """Save a tiny SDXL pipeline whose UNet is guidance-embedded (as :func:`save_sd15_guidance_embedded`)."""
    components = _with_guidance_embedding(sdxl_components(seed), seed)
    return _save(StableDiffusionXLPipeline(**components), folder, None)


def _with_guidance_embedding(components: dict[str, Any], seed: int) -> dict[str, Any]:
    torch.manual_seed(seed)
    config = {key: value for key, value in components["unet"].config.items() if not key.startswith("_")}
    config["time_cond_proj_dim"] = GUIDANCE_EMBEDDING_DIM  # (kept: the base config lists it as left at its default)
    return {**components, "unet": UNet2DConditionModel.from_config(config).eval()}


def save_sdxl(
    folder: Path, seed: int = 0, model_defaults: dict[str, Any] | None = None, text_hidden_2: int = TEXT_HIDDEN
) -> Path:
    """Save a tiny SDXL pipeline as a diffusers folder; ``model_defaults`` is written as ``imageloop.json``."""
    return _save(sdxl_pipeline(seed, text_hidden_2), folder, model_defaults)


def save_controlnet(folder: Path, seed: int = 0) -> Path:
    """Save a tiny SD1.5-compatible ControlNet as a diffusers model folder."""
    make_controlnet(seed).save_pretrained(folder)
    return folder


def _save(pipe: Any, folder: Path, model_defaults: dict[str, Any] | None) -> Path:
    pipe.save_pretrained(folder, safe_serialization=True)
    if model_defaults is not None:
        (folder / "imageloop.json").write_text(json.dumps(model_defaults), encoding="utf-8")
    return folder


@contextmanager
def count_calls(module: torch.nn.Module) -> Iterator[list[int]]:
    """Count forward calls of ``module`` inside the ``with`` block: ``with count_calls(unet) as n: ...; n[0]``."""
    counter = [0]

    def hook(*_: Any) -> None:
        counter[0] += 1

    handle = module.register_forward_pre_hook(hook)
    try:
        yield counter
    finally:
        handle.remove()
