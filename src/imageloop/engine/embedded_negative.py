"""Negative prompts on guidance-embedded UNets (LCM-distilled SD1.5/SDXL models, our few-step student).

Such a UNet takes the guidance scale as an embedding beside the timestep and diffusers runs one conditional pass per
step for it, dropping any negative conditioning. As ComfyUI and A1111 do when an LCM model is run with CFG above 1,
the engine adds the negative back: while :func:`negative_pass` is active, each UNet call also runs the rows that have
a negative prompt on their negative conditioning (one batched call, same latents, timestep and guidance embedding)
and returns ``out_pos + scale * (out_pos - out_neg)`` for those rows (``engine.embedded_negative_scale``).

A row whose negative conditioning equals its positive one (the engine gives no-negative rows their positive prompt
as the negative) would be left unchanged by the formula, so it gets no second pass; a batch without any negative
runs exactly as diffusers runs it, one pass of the original batch per step. Everything the UNet is given per row
(latents, guidance embedding, ControlNet residuals, SDXL time ids, IP-Adapter image embeddings) is repeated for the
negative rows; the text conditioning (and SDXL's pooled text embedding) is the negative prompt's.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["EmbeddedNegative", "negative_pass", "split_embedded_negative"]

_NEGATIVE_KEYS = ("negative_prompt_embeds", "negative_pooled_prompt_embeds")


@dataclass(frozen=True)
class EmbeddedNegative:
    """The negative conditioning of the batch rows that have a negative prompt: ``rows`` (indices into the batch),
    their ``embeds`` ``[len(rows), L, D]``, SDXL's ``pooled`` ``[len(rows), P]`` (None for SD1.5), and the ``scale``
    of ``out_pos + scale * (out_pos - out_neg)``."""

    rows: torch.Tensor
    embeds: torch.Tensor
    pooled: torch.Tensor | None
    scale: float


def split_embedded_negative(
    kwargs: Mapping[str, Any], scale: float
) -> tuple[dict[str, Any], EmbeddedNegative | None]:
    """The pipeline call's keyword arguments without the negative embeddings (the pipeline of a guidance-embedded
    UNet would not use them), and the negative conditioning of the rows whose negative differs from their positive
    (None when no row's does, or when ``scale`` is 0: then nothing changes)."""
    call = {key: value for key, value in kwargs.items() if key not in _NEGATIVE_KEYS}
    negative = kwargs.get("negative_prompt_embeds")
    positive = kwargs.get("prompt_embeds")
    if negative is None or positive is None or scale == 0.0:
        return call, None
    pooled, negative_pooled = kwargs.get("pooled_prompt_embeds"), kwargs.get("negative_pooled_prompt_embeds")
    differs = (negative != positive).flatten(1).any(dim=1)
    if pooled is not None and negative_pooled is not None:
        differs |= (negative_pooled != pooled).flatten(1).any(dim=1)
    rows = differs.nonzero().flatten()
    if rows.numel() == 0:
        return call, None
    return call, EmbeddedNegative(rows=rows, embeds=negative[rows],
                                  pooled=negative_pooled[rows] if negative_pooled is not None else None, scale=scale)


def _with_rows(value: Any, batch: int, rows: torch.Tensor) -> Any:
    """``value`` with its ``rows`` appended along the batch axis, for every tensor of ``batch`` rows inside it."""
    if isinstance(value, torch.Tensor):
        if value.dim() > 0 and value.shape[0] == batch:
            return torch.cat([value, value[rows.to(value.device)]])
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(_with_rows(item, batch, rows) for item in value)
    if isinstance(value, dict):
        return {key: _with_rows(item, batch, rows) for key, item in value.items()}
    return value


def _conditioned(negative: EmbeddedNegative, batch: int, args: tuple[Any, ...], kwargs: dict[str, Any]
                 ) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The UNet call's arguments for the positive batch followed by the negative rows."""
    positive = kwargs.get("encoder_hidden_states", args[2] if len(args) > 2 else None)
    if not isinstance(positive, torch.Tensor) or positive.shape[0] != batch:
        raise ValueError(f"encoder_hidden_states must have {batch} rows for the negative pass, got "
                         f"{getattr(positive, 'shape', None)}")
    doubled_args = _with_rows(args, batch, negative.rows)
    doubled = _with_rows(kwargs, batch, negative.rows)
    text = torch.cat([positive, negative.embeds.to(positive)])
    if len(args) > 2:
        doubled_args = (*doubled_args[:2], text, *doubled_args[3:])
    else:
        doubled["encoder_hidden_states"] = text
    added = kwargs.get("added_cond_kwargs")
    if negative.pooled is not None and isinstance(added, dict) and isinstance(added.get("text_embeds"), torch.Tensor):
        pooled = added["text_embeds"]
        doubled["added_cond_kwargs"] = {**doubled["added_cond_kwargs"],
                                        "text_embeds": torch.cat([pooled, negative.pooled.to(pooled)])}
    return doubled_args, doubled


def _guided(sample: torch.Tensor, batch: int, negative: EmbeddedNegative) -> torch.Tensor:
    """The first ``batch`` rows of ``sample``, those with a negative moved away from it by ``scale``."""
    out = sample[:batch].clone()
    rows = negative.rows.to(sample.device)
    positive = out[rows]
    out[rows] = positive + negative.scale * (positive - sample[batch:])
    return out


@contextmanager
def negative_pass(unet: torch.nn.Module | None, negative: EmbeddedNegative | None) -> Iterator[None]:
    """While the ``with`` block runs, every call of ``unet`` also denoises ``negative``'s rows on their negative
    conditioning and returns the guided result (see the module docstring); with None the UNet is left as it is."""
    if negative is None:
        yield
        return
    if unet is None:
        raise ValueError("a negative pass needs the pipeline's UNet")
    batches: list[int] = []

    def before(_module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
               ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        sample = args[0] if args else kwargs["sample"]
        batches.append(int(sample.shape[0]))
        return _conditioned(negative, batches[-1], args, kwargs)

    def after(_module: torch.nn.Module, _args: tuple[Any, ...], _kwargs: dict[str, Any], output: Any) -> Any:
        batch = batches.pop()
        if isinstance(output, tuple):
            return (_guided(output[0], batch, negative), *output[1:])
        output.sample = _guided(output.sample, batch, negative)
        return output

    handles = [unet.register_forward_pre_hook(before, with_kwargs=True),
               unet.register_forward_hook(after, with_kwargs=True)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
