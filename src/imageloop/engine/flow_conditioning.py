"""Weighted prompt conditioning for the flow-matching families: FLUX.1 (CLIP-L pooled + T5) and SD3 (CLIP-L,
CLIP-G, optional T5).

The encodings match diffusers' own ``encode_prompt`` of each pipeline when every weight is 1.0:

- FLUX.1: ``pooled`` is CLIP-L's pooled output of the first 77 tokens; ``embeds`` is T5's last hidden state of
  ``max_sequence_length`` tokens (512, padded).
- SD3: CLIP-L's and CLIP-G's penultimate hidden states of the first 77 tokens, joined on the feature axis and
  zero-padded to T5's width, followed on the sequence axis by T5's 256 tokens (zeros when the model has no T5);
  ``pooled`` is both CLIP pooled outputs joined.

Prompt weights ``(word:1.2)`` act on every encoder the same way as on SD1.5/SDXL (``PromptWeighting``): "a1111"
scales the weighted tokens' hidden states and restores the mean, "context" moves the encoding ``weight - 1`` times
the difference the weighted tokens make (the text re-encoded with them replaced by padding). On T5 the weights
apply to T5's own tokens of each fragment; the pooled CLIP vector is unweighted, as SDXL's. T5 has no 75-token
chunks: ``BREAK`` only separates words there, and text beyond ``max_sequence_length`` tokens is cut, as diffusers
does; the CLIP parts see the first 75 tokens only.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.utils.torch_utils import get_module_execution_device

from imageloop.engine.conditioning import (
    EncodedPrompt,
    PromptWeighting,
    _apply_weights,
    _chunk,
    _is_break,
    _run_encoder,
    _text_encoder,
)
from imageloop.errors import UnsupportedModelError
from imageloop.prompts.weights import parse_weights

FLUX_MAX_SEQUENCE = 512
SD3_MAX_SEQUENCE = 256


def encode_flow_prompt(pipe: Any, architecture: str, text: str, weighting: PromptWeighting = "a1111") -> EncodedPrompt:
    """Encode ``text`` (A1111 attention syntax) for a FLUX.1 (``architecture`` "flux") or SD3 ("sd3") pipeline;
    shapes as the module docstring says. UnsupportedModelError when an encoder the family needs is missing."""
    if architecture == "flux":
        return _encode_flux(pipe, text, weighting)
    if architecture == "sd3":
        return _encode_sd3(pipe, text, weighting)
    raise UnsupportedModelError(f"no flow-family prompt encoding for {architecture} models")


def _encode_flux(pipe: Any, text: str, weighting: PromptWeighting) -> EncodedPrompt:
    if pipe.text_encoder is None or pipe.text_encoder_2 is None:
        raise UnsupportedModelError("a FLUX.1 pipeline needs its CLIP (text_encoder) and T5 (text_encoder_2)")
    clip = _text_encoder(pipe.tokenizer, pipe.text_encoder)
    first = _chunk(clip, text)[0]
    device = get_module_execution_device(clip.model)
    with torch.no_grad():
        pooled = clip.model(torch.tensor([first.ids], device=device), output_hidden_states=False).pooler_output
    length = _max_sequence(pipe.tokenizer_2, FLUX_MAX_SEQUENCE)
    embeds = _t5_states(pipe.tokenizer_2, pipe.text_encoder_2, text, length, weighting)
    return EncodedPrompt(embeds=embeds, pooled=pooled.to(embeds.dtype))


def _encode_sd3(pipe: Any, text: str, weighting: PromptWeighting) -> EncodedPrompt:
    states: list[torch.Tensor] = []
    pooled: list[torch.Tensor] = []
    for tokenizer, model in ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)):
        if tokenizer is None or model is None:
            raise UnsupportedModelError("an SD3 pipeline needs both CLIP text encoders (text_encoder, text_encoder_2)")
        encoder = _text_encoder(tokenizer, model)
        hidden, enc_pooled = _run_encoder(encoder, _chunk(encoder, text)[:1], penultimate=True, weighting=weighting)
        if enc_pooled is None:
            raise UnsupportedModelError("SD3's CLIP text encoders must have projections (CLIPTextModelWithProjection)")
        states.append(hidden)
        pooled.append(enc_pooled)
    clip = torch.cat(states, dim=-1)
    width = int(pipe.transformer.config.joint_attention_dim)
    if getattr(pipe, "text_encoder_3", None) is not None and getattr(pipe, "tokenizer_3", None) is not None:
        length = _max_sequence(pipe.tokenizer_3, SD3_MAX_SEQUENCE)
        t5 = _t5_states(pipe.tokenizer_3, pipe.text_encoder_3, text, length, weighting).to(clip.dtype)
    else:  # T5 left out: diffusers conditions on zeros in its place
        t5 = torch.zeros(1, SD3_MAX_SEQUENCE, width, dtype=clip.dtype, device=clip.device)
    clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
    return EncodedPrompt(embeds=torch.cat([clip, t5.to(clip.device)], dim=-2), pooled=torch.cat(pooled, dim=-1))


def _max_sequence(tokenizer: Any, default: int) -> int:
    limit = getattr(tokenizer, "model_max_length", default)
    return min(default, int(limit)) if isinstance(limit, int) else default


def t5_tokens(tokenizer: Any, text: str, length: int) -> tuple[list[int], list[float]]:
    """T5 ids of ``text`` (weights syntax removed, end token appended, padded to ``length``) and each id's weight."""
    fragments = [(fragment, weight) for fragment, weight in parse_weights(text) if not _is_break(fragment, weight)]
    ids: list[int] = []
    weights: list[float] = []
    if fragments:
        token_lists = tokenizer([f for f, _ in fragments], add_special_tokens=False, verbose=False)["input_ids"]
        for (_, weight), tokens in zip(fragments, token_lists, strict=True):
            ids.extend(int(t) for t in tokens)
            weights.extend([weight] * len(tokens))
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    if not isinstance(eos, int) or not isinstance(pad, int):
        raise UnsupportedModelError(f"T5 tokenizer {type(tokenizer).__name__} needs end and padding tokens")
    ids, weights = [*ids[: length - 1], eos], [*weights[: length - 1], 1.0]
    padding = length - len(ids)
    return ids + [pad] * padding, weights + [1.0] * padding


@torch.no_grad()
def _t5_states(tokenizer: Any, model: Any, text: str, length: int, weighting: PromptWeighting) -> torch.Tensor:
    """T5's weighted last hidden state ``[1, length, D]`` for ``text``."""
    ids, weights = t5_tokens(tokenizer, text, length)
    device = get_module_execution_device(model)

    def run(token_ids: list[int]) -> torch.Tensor:
        output: torch.Tensor = model(torch.tensor([token_ids], device=device), output_hidden_states=False)[0]
        return output

    hidden = run(ids)
    if weighting == "a1111":
        return _apply_weights(hidden, torch.tensor([weights], device=hidden.device))
    out = hidden.float().clone()
    pad = tokenizer.pad_token_id
    for weight in sorted(set(weights) - {1.0}):
        without = run([pad if w == weight else i for i, w in zip(ids, weights, strict=True)])
        out += (weight - 1.0) * (hidden.float() - without.float())
    return out.to(hidden.dtype)
