"""Weighted prompt conditioning for CLIP text encoders, the way AUTOMATIC1111 does it.

A prompt is parsed with :func:`imageloop.prompts.parse_weights`, each fragment is tokenized and its weight given
to its tokens, and the tokens are cut into chunks of ``model_max_length - 2`` (75 for CLIP), each framed by the
start/end tokens and padded. ``BREAK`` starts a new chunk; a chunk that fills up moves the words after its last
comma (if that comma is at most :data:`COMMA_BACKTRACK` tokens back) into the next chunk. Every chunk goes through
the text encoder and the weights are applied in one of two ways (:data:`PromptWeighting`):

- ``"a1111"`` (A1111's "Original" emphasis, the default): each token's hidden state is multiplied by its weight
  and the chunk is rescaled so its mean equals the unweighted mean (unless that mean is ~0, see
  :data:`MEAN_TOLERANCE`).
- ``"context"``: a weight scales the *difference the fragment makes* to the whole encoding: the chunks are encoded
  once as written and once per distinct weight with that weight's tokens replaced by padding, and the encoding is
  moved ``weight - 1`` times that difference further (``weight`` 0 is the prompt without the fragment). In a causal
  text encoder the tokens after a fragment carry it too, so this reaches models whose UNet normalises token states
  or reads the fragment mostly from later tokens, where scaling the fragment's own tokens changes nothing (our
  embedded model). ComfyUI offers similar choices ("weight interpretation").

The chunks are then concatenated along the sequence axis, so long prompts keep their tail instead of being
truncated.

Works with any diffusers pipeline that has ``tokenizer``/``text_encoder`` (SD1.5-like: the last hidden state) and
optionally ``tokenizer_2``/``text_encoder_2`` (SDXL-like: the penultimate hidden state of each encoder, joined on
the feature axis; the pooled embedding is the second encoder's, taken from the first chunk).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from diffusers.utils.torch_utils import get_module_execution_device

from imageloop.errors import InvalidRequestError, UnsupportedModelError
from imageloop.prompts.weights import BREAK, parse_weights

__all__ = [
    "COMMA_BACKTRACK",
    "MEAN_TOLERANCE",
    "EncodedPrompt",
    "PromptChunk",
    "PromptWeighting",
    "batch_for_pipeline",
    "encode_prompt",
    "pair_for_pipeline",
    "tokenize_prompt",
]

# A1111's default ``comma_padding_backtrack``: how far back a full chunk may look for a comma to break at.
COMMA_BACKTRACK = 20
# Below this |mean| / mean(|value|) a chunk's mean is treated as zero and not restored (see _apply_weights).
MEAN_TOLERANCE = 1e-3

# How (word:1.2) weights act on the encoding; see the module docstring.
PromptWeighting = Literal["a1111", "context"]


@dataclass(frozen=True)
class EncodedPrompt:
    """A prompt's conditioning: ``embeds`` is ``[1, chunks * max_length, D]``; ``pooled`` is ``[1, P]`` (SDXL only)."""

    embeds: torch.Tensor
    pooled: torch.Tensor | None


@dataclass(frozen=True)
class PromptChunk:
    """One text-encoder input: ids framed as ``start, tokens..., end, pad...``, one weight per id, and how many of
    the ids are prompt tokens (``token_count``, not counting start, end and padding)."""

    ids: tuple[int, ...]
    weights: tuple[float, ...]
    token_count: int


@dataclass(frozen=True)
class _TextEncoder:
    """One tokenizer/text-encoder pair of a pipeline, with the ids the chunking needs."""

    tokenizer: Any
    model: Any
    max_length: int
    bos: int
    eos: int
    pad: int
    comma: int | None


def _special_id(tokenizer: Any, name: str) -> int:
    value = getattr(tokenizer, f"{name}_token_id", None)
    if not isinstance(value, int):
        raise UnsupportedModelError(f"tokenizer {type(tokenizer).__name__} has no {name} token; CLIP needs one")
    return value


def _comma_id(tokenizer: Any) -> int | None:
    ids = tokenizer(",", add_special_tokens=False)["input_ids"]
    if len(ids) == 1 and ids[0] != getattr(tokenizer, "unk_token_id", None):
        return int(ids[0])
    return None


def _text_encoder(tokenizer: Any, model: Any) -> _TextEncoder:
    max_length = int(tokenizer.model_max_length)
    positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(positions, int):
        max_length = min(max_length, positions)  # tokenizers without a limit report a huge model_max_length
    if max_length < 3:
        raise UnsupportedModelError(f"text encoder max length {max_length} leaves no room for prompt tokens")
    eos = _special_id(tokenizer, "eos")
    pad = getattr(tokenizer, "pad_token_id", None)
    return _TextEncoder(
        tokenizer=tokenizer,
        model=model,
        max_length=max_length,
        bos=_special_id(tokenizer, "bos"),
        eos=eos,
        pad=pad if isinstance(pad, int) else eos,
        comma=_comma_id(tokenizer),
    )


def _is_sdxl_like(pipe: object) -> bool:
    return getattr(pipe, "text_encoder_2", None) is not None


def _text_encoders(pipe: object) -> list[_TextEncoder]:
    pairs = [("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2")]
    found = [
        _text_encoder(getattr(pipe, tok), getattr(pipe, enc))
        for tok, enc in pairs
        if getattr(pipe, tok, None) is not None and getattr(pipe, enc, None) is not None
    ]
    if not found:
        raise UnsupportedModelError(f"{type(pipe).__name__} has no CLIP tokenizer and text encoder to encode prompts")
    return found


class _Chunker:
    """A1111's chunking: fills chunks token by token, honouring BREAK and breaking at a recent comma."""

    def __init__(self, encoder: _TextEncoder) -> None:
        self.encoder = encoder
        self.size = encoder.max_length - 2
        self.chunks: list[PromptChunk] = []
        self.ids: list[int] = []
        self.weights: list[float] = []
        self.last_comma = -1

    def close(self) -> None:
        """Frame and pad the current chunk and start a new, empty one."""
        padding = self.size - len(self.ids)
        enc = self.encoder
        self.chunks.append(
            PromptChunk(
                ids=(enc.bos, *self.ids, enc.eos, *[enc.pad] * padding),
                weights=(1.0, *self.weights, 1.0, *[1.0] * padding),
                token_count=len(self.ids),
            )
        )
        self.ids, self.weights, self.last_comma = [], [], -1

    def add(self, token: int, weight: float) -> None:
        if token == self.encoder.comma:
            self.last_comma = len(self.ids)
        elif len(self.ids) == self.size and self.last_comma != -1 and self.size - self.last_comma <= COMMA_BACKTRACK:
            # Move the words after the comma into the next chunk rather than split a phrase.
            cut = self.last_comma + 1
            moved_ids, moved_weights = self.ids[cut:], self.weights[cut:]
            self.ids, self.weights = self.ids[:cut], self.weights[:cut]
            self.close()
            self.ids, self.weights = moved_ids, moved_weights
        if len(self.ids) == self.size:
            self.close()
        self.ids.append(token)
        self.weights.append(weight)

    def finish(self) -> list[PromptChunk]:
        if self.ids or not self.chunks:
            self.close()
        return self.chunks


def _is_break(text: str, weight: float) -> bool:
    # parse_weights marks BREAK with -1.0. Inside brackets the marker gets scaled (-1.1) and A1111 then encodes the
    # word "BREAK" with a negative weight; the user meant a break, and a bare negative "BREAK" only ever comes
    # from the marker, so we break there too.
    return text == BREAK and weight < 0


def _chunk(encoder: _TextEncoder, text: str) -> list[PromptChunk]:
    fragments = parse_weights(text)
    token_lists = encoder.tokenizer(
        [fragment for fragment, _ in fragments], add_special_tokens=False, truncation=False, verbose=False
    )["input_ids"]
    chunker = _Chunker(encoder)
    for (fragment, weight), tokens in zip(fragments, token_lists, strict=True):
        if _is_break(fragment, weight):
            chunker.close()
            continue
        for token in tokens:
            chunker.add(int(token), weight)
    return chunker.finish()


def tokenize_prompt(pipe: object, text: str) -> list[PromptChunk]:
    """The chunks the pipeline's first text encoder would see for ``text`` (at least one; each ``max_length`` long).

    Useful for showing a token count: the prompt's tokens are ``sum(chunk.token_count for chunk in chunks)``.
    """
    return _chunk(_text_encoders(pipe)[0], text)


def _empty_chunk(encoder: _TextEncoder) -> PromptChunk:
    chunker = _Chunker(encoder)
    chunker.close()
    return chunker.chunks[0]


def _apply_weights(hidden: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Scale each token's hidden state by its weight, then restore each chunk's mean (A1111's "Original").

    One deliberate difference from A1111: where a chunk's mean is ~0 next to its values (an untrained final layer
    norm gives exactly that) the ratio of means is noise, so that chunk is only scaled, not rescaled.
    """
    if bool((weights == 1.0).all()):
        return hidden
    work = hidden.float()
    original_mean = work.mean(dim=(1, 2))
    weighted = work * weights.to(work)[:, :, None]
    new_mean = weighted.mean(dim=(1, 2))
    scale = weighted.abs().mean(dim=(1, 2))
    conditioned = (original_mean.abs() > MEAN_TOLERANCE * scale) & (new_mean.abs() > MEAN_TOLERANCE * scale)
    ratio = torch.where(conditioned, original_mean / torch.where(conditioned, new_mean, 1.0), 1.0)
    return (weighted * ratio[:, None, None]).to(hidden.dtype)


@torch.no_grad()
def _encoder_states(
    encoder: _TextEncoder, chunks: Sequence[PromptChunk], penultimate: bool, clip_skip: int = 1
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Unweighted hidden states ``[n, T, D]`` of the chunks and chunk 0's pooled output (when the encoder has one).

    ``clip_skip`` > 1 (not with ``penultimate``) takes that layer from the end through the final layer norm, as A1111
    and diffusers' ``clip_skip`` do."""
    model = encoder.model
    device = get_module_execution_device(model)
    ids = torch.tensor([chunk.ids for chunk in chunks], dtype=torch.long, device=device)
    kwargs: dict[str, Any] = {}
    if penultimate or clip_skip > 1:
        kwargs["output_hidden_states"] = True
    if not penultimate and getattr(model.config, "use_attention_mask", False):
        # As diffusers' SD pipeline does: attend to start, tokens and end, not to the padding.
        kwargs["attention_mask"] = _attention_mask(chunks).to(device)
    output = model(ids, **kwargs)
    if penultimate:
        hidden = output.hidden_states[-2]
    elif clip_skip > 1:
        layers = output.hidden_states
        if clip_skip >= len(layers):
            raise InvalidRequestError("clip_skip", f"the text encoder has {len(layers) - 1} layers", value=clip_skip,
                                      allowed=f"1..{len(layers) - 1}")
        # transformers 5 keeps the final norm on the model itself, earlier releases on its text_model.
        hidden = getattr(model, "text_model", model).final_layer_norm(layers[-clip_skip])
    else:
        hidden = output.last_hidden_state
    pooled = getattr(output, "text_embeds", None)
    return hidden, pooled[:1] if isinstance(pooled, torch.Tensor) else None


def _without_weight(encoder: _TextEncoder, chunks: Sequence[PromptChunk], weight: float) -> list[PromptChunk]:
    """The chunks with every token of ``weight`` replaced by padding (positions of the other tokens unchanged)."""
    return [
        PromptChunk(
            ids=tuple(encoder.pad if w == weight else i for i, w in zip(chunk.ids, chunk.weights, strict=True)),
            weights=tuple(1.0 for _ in chunk.weights),
            token_count=chunk.token_count,
        )
        for chunk in chunks
    ]


def _context_weights(
    encoder: _TextEncoder, chunks: Sequence[PromptChunk], penultimate: bool, hidden: torch.Tensor, clip_skip: int = 1
) -> torch.Tensor:
    """``"context"`` weighting: move ``hidden`` ``weight - 1`` times the difference each weight's tokens make."""
    weights = sorted({w for chunk in chunks for w in chunk.weights} - {1.0})
    if not weights:
        return hidden
    work = hidden.float()
    out = work.clone()
    for weight in weights:
        without, _ = _encoder_states(encoder, _without_weight(encoder, chunks, weight), penultimate, clip_skip)
        out += (weight - 1.0) * (work - without.float())
    return out.to(hidden.dtype)


def _run_encoder(
    encoder: _TextEncoder,
    chunks: Sequence[PromptChunk],
    penultimate: bool,
    weighting: PromptWeighting = "a1111",
    clip_skip: int = 1,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Encode all chunks in one batch; return weighted hidden states ``[1, n*T, D]`` and chunk 0's pooled output."""
    hidden, pooled = _encoder_states(encoder, chunks, penultimate, clip_skip)
    if weighting == "context":
        weighted = _context_weights(encoder, chunks, penultimate, hidden, clip_skip)
    else:
        weights = torch.tensor([chunk.weights for chunk in chunks], dtype=torch.float32, device=hidden.device)
        weighted = _apply_weights(hidden, weights)
    return weighted.reshape(1, -1, hidden.shape[-1]), pooled


def _attention_mask(chunks: Sequence[PromptChunk]) -> torch.Tensor:
    rows = [[1] * (c.token_count + 2) + [0] * (len(c.ids) - c.token_count - 2) for c in chunks]
    return torch.tensor(rows, dtype=torch.long)


def encode_prompt(
    pipe: object, text: str, weighting: PromptWeighting = "a1111", clip_skip: int = 1
) -> EncodedPrompt:
    """Encode ``text`` (A1111 attention syntax) with the pipeline's CLIP text encoder(s), applying its weights the
    ``weighting`` way (see the module docstring).

    ``clip_skip`` is A1111's "Clip skip" (1 = the last layer); SDXL-like pipelines always take the penultimate layer
    and do not apply it, as A1111 does by default.

    Returns ``embeds`` of shape ``[1, chunks * max_length, D]`` (D is the sum of both encoders' widths for
    SDXL-like pipelines) and, for SDXL-like pipelines, the second encoder's pooled embedding ``[1, P]``.
    With every weight 1.0 and a prompt that fits one chunk, the result equals diffusers' own ``encode_prompt``.
    Raises UnsupportedModelError when the pipeline has no usable tokenizer/text encoder.
    """
    encoders = _text_encoders(pipe)
    sdxl = _is_sdxl_like(pipe)
    if len({enc.max_length for enc in encoders}) > 1:
        lengths = ", ".join(str(enc.max_length) for enc in encoders)
        raise UnsupportedModelError(f"the text encoders' max lengths differ ({lengths}); cannot join their outputs")
    per_encoder = [_chunk(enc, text) for enc in encoders]
    count = max(len(chunks) for chunks in per_encoder)
    hidden_states: list[torch.Tensor] = []
    pooled: torch.Tensor | None = None
    for enc, chunks in zip(encoders, per_encoder, strict=True):
        # Different tokenizers may chunk differently; pad with empty chunks so the sequences line up.
        padded = chunks + [_empty_chunk(enc)] * (count - len(chunks))
        hidden, enc_pooled = _run_encoder(enc, padded, penultimate=sdxl, weighting=weighting,
                                          clip_skip=1 if sdxl else clip_skip)
        hidden_states.append(hidden)
        if pooled is None and enc_pooled is not None:
            pooled = enc_pooled
    last = hidden_states[-1]
    embeds = torch.cat([h.to(device=last.device, dtype=last.dtype) for h in hidden_states], dim=-1)
    return EncodedPrompt(embeds=embeds, pooled=pooled if sdxl else None)


def _pad_to(embeds: torch.Tensor, length: int, empty: torch.Tensor) -> torch.Tensor:
    missing = length - embeds.shape[1]
    if missing == 0:
        return embeds
    chunk = empty.shape[1]
    if missing % chunk:
        raise InvalidRequestError(
            "prompt_embeds", f"length {embeds.shape[1]} is not a whole number of {chunk}-token chunks"
        )
    filler = empty.to(device=embeds.device, dtype=embeds.dtype).expand(1, -1, -1).repeat(1, missing // chunk, 1)
    return torch.cat([embeds, filler], dim=1)


def batch_for_pipeline(
    pipe: object, pairs: Sequence[tuple[EncodedPrompt, EncodedPrompt]]
) -> dict[str, torch.Tensor]:
    """Keyword arguments for one diffusers pipeline call generating one image per ``(positive, negative)`` pair.

    Every embedding is padded with empty-prompt chunks to the longest one, then the pairs are stacked on the batch
    axis: ``prompt_embeds``/``negative_prompt_embeds`` ``[B, L, D]`` and, for SDXL-like pipelines,
    ``pooled_prompt_embeds``/``negative_pooled_prompt_embeds`` ``[B, P]``.
    Raises InvalidRequestError for an empty list or embeddings that do not fit the pipeline.
    """
    if not pairs:
        raise InvalidRequestError("prompts", "at least one prompt is needed")
    encoded = [prompt for pair in pairs for prompt in pair]
    widths = {prompt.embeds.shape[-1] for prompt in encoded}
    if len(widths) > 1:
        raise InvalidRequestError("prompt_embeds", f"embeddings of different widths {sorted(widths)} cannot be mixed")
    length = max(prompt.embeds.shape[1] for prompt in encoded)
    empty = encode_prompt(pipe, "").embeds if any(p.embeds.shape[1] != length for p in encoded) else None
    padded = [p.embeds if empty is None else _pad_to(p.embeds, length, empty) for p in encoded]
    kwargs = {
        "prompt_embeds": torch.cat(padded[0::2], dim=0),
        "negative_prompt_embeds": torch.cat(padded[1::2], dim=0),
    }
    if _is_sdxl_like(pipe):
        if any(prompt.pooled is None for prompt in encoded):
            raise InvalidRequestError("pooled_prompt_embeds", "SDXL-like pipelines need pooled embeddings")
        pooled = [prompt.pooled for prompt in encoded if prompt.pooled is not None]
        kwargs["pooled_prompt_embeds"] = torch.cat(pooled[0::2], dim=0)
        kwargs["negative_pooled_prompt_embeds"] = torch.cat(pooled[1::2], dim=0)
    return kwargs


def pair_for_pipeline(pipe: object, positive: EncodedPrompt, negative: EncodedPrompt) -> dict[str, torch.Tensor]:
    """Keyword arguments for a diffusers pipeline call from one positive and one negative prompt.

    The shorter embedding is padded with empty-prompt chunks so both have the same length. Returns
    ``prompt_embeds`` and ``negative_prompt_embeds`` and, for SDXL-like pipelines, ``pooled_prompt_embeds`` and
    ``negative_pooled_prompt_embeds``.
    """
    return batch_for_pipeline(pipe, [(positive, negative)])
