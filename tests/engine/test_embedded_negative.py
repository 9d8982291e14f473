"""The negative pass added to a guidance-embedded UNet's calls: which rows get one, what the UNet is given, and the
guided result, on a toy denoiser whose output is a known function of its inputs."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

from imageloop.engine.embedded_negative import EmbeddedNegative, negative_pass, split_embedded_negative


class ToyUNet(torch.nn.Module):
    """``sample * mean(text) + timestep_cond`` (+ SDXL's pooled text and the ControlNet residual), recording the batch
    size of each call; returns a tuple with ``return_dict=False`` as diffusers' pipelines ask."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                timestep_cond: torch.Tensor | None = None, added_cond_kwargs: dict[str, Any] | None = None,
                mid_block_additional_residual: torch.Tensor | None = None, return_dict: bool = True) -> Any:
        self.batches.append(sample.shape[0])
        out = sample * encoder_hidden_states.mean(dim=(1, 2))[:, None, None, None] + timestep
        if timestep_cond is not None:
            out = out + timestep_cond.mean(dim=1)[:, None, None, None]
        if added_cond_kwargs is not None:
            out = out + added_cond_kwargs["text_embeds"].mean(dim=1)[:, None, None, None]
            out = out + added_cond_kwargs["time_ids"].mean(dim=1)[:, None, None, None]
        if mid_block_additional_residual is not None:
            out = out + mid_block_additional_residual
        return (out,) if not return_dict else UNet2DConditionOutput(sample=out)


def conditioning(rows: int, seed: int) -> torch.Tensor:
    return torch.randn(rows, 3, 4, generator=torch.Generator().manual_seed(seed))


def test_only_rows_whose_negative_differs_get_a_negative_pass() -> None:
    positive = conditioning(3, 0)
    negative = positive.clone()
    negative[1] = conditioning(1, 1)[0]
    call, found = split_embedded_negative({"prompt_embeds": positive, "negative_prompt_embeds": negative,
                                           "num_inference_steps": 4}, scale=0.5)
    assert set(call) == {"prompt_embeds", "num_inference_steps"}  # the pipeline never sees the negative
    assert found is not None and found.rows.tolist() == [1] and found.scale == 0.5
    assert torch.equal(found.embeds, negative[1:2]) and found.pooled is None


def test_sdxl_pooled_embeddings_count_and_travel_with_the_row() -> None:
    positive, pooled = conditioning(2, 0), torch.randn(2, 5)
    negative_pooled = pooled.clone()
    negative_pooled[0] += 1.0
    _, found = split_embedded_negative({"prompt_embeds": positive, "negative_prompt_embeds": positive.clone(),
                                        "pooled_prompt_embeds": pooled,
                                        "negative_pooled_prompt_embeds": negative_pooled}, scale=1.0)
    assert found is not None and found.rows.tolist() == [0]
    assert found.pooled is not None and torch.equal(found.pooled, negative_pooled[:1])


@pytest.mark.parametrize("scale", [0.0, 1.0])
def test_no_negative_or_a_zero_scale_adds_nothing(scale: float) -> None:
    positive = conditioning(2, 0)
    negative = positive.clone() if scale else conditioning(2, 1)
    call, found = split_embedded_negative({"prompt_embeds": positive, "negative_prompt_embeds": negative}, scale)
    assert found is None and set(call) == {"prompt_embeds"}
    unet = ToyUNet()
    with negative_pass(unet, found):
        unet(torch.ones(2, 1, 2, 2), torch.tensor(1.0), encoder_hidden_states=positive)
    assert unet.batches == [2]


def test_the_guided_rows_move_away_from_the_negative_and_the_rest_stay() -> None:
    unet = ToyUNet()
    sample = torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(3))
    timestep, guidance = torch.tensor(5.0), torch.randn(3, 8)
    positive, negative_text = conditioning(3, 0), conditioning(1, 1)
    residual = torch.randn(3, 1, 2, 2)
    scale = 0.75
    found = EmbeddedNegative(rows=torch.tensor([2]), embeds=negative_text, pooled=None, scale=scale)
    kwargs = {"encoder_hidden_states": positive, "timestep_cond": guidance, "mid_block_additional_residual": residual}
    with torch.no_grad():
        plain = unet(sample, timestep, return_dict=False, **kwargs)[0]
        with negative_pass(unet, found):
            guided = unet(sample, timestep, return_dict=False, **kwargs)[0]
        alone = unet(sample[2:], timestep, encoder_hidden_states=negative_text, timestep_cond=guidance[2:],
                     mid_block_additional_residual=residual[2:], return_dict=False)[0]
    assert unet.batches == [3, 4, 1]  # the negative row joined the batch
    assert torch.equal(guided[:2], plain[:2])
    torch.testing.assert_close(guided[2:], plain[2:] + scale * (plain[2:] - alone))
    with torch.no_grad():  # removed after the block
        unet(sample, timestep, **kwargs)
    assert unet.batches[-1] == 3


def test_sdxl_conditioning_and_a_dict_output() -> None:
    unet = ToyUNet()
    sample, positive, pooled = torch.randn(2, 1, 2, 2), conditioning(2, 0), torch.randn(2, 5)
    time_ids = torch.randn(2, 6)
    negative_text, negative_pooled = conditioning(2, 1), torch.randn(2, 5)
    found = EmbeddedNegative(rows=torch.tensor([0, 1]), embeds=negative_text, pooled=negative_pooled, scale=2.0)
    added = {"text_embeds": pooled, "time_ids": time_ids}
    with torch.no_grad():
        plain = unet(sample, torch.tensor(1.0), encoder_hidden_states=positive, added_cond_kwargs=added).sample
        with negative_pass(unet, found):
            guided = unet(sample, torch.tensor(1.0), encoder_hidden_states=positive, added_cond_kwargs=added).sample
        alone = unet(sample, torch.tensor(1.0), encoder_hidden_states=negative_text,
                     added_cond_kwargs={"text_embeds": negative_pooled, "time_ids": time_ids}).sample
    torch.testing.assert_close(guided, plain + 2.0 * (plain - alone))


def test_a_unet_call_without_one_text_row_per_image_is_refused() -> None:
    found = EmbeddedNegative(rows=torch.tensor([0]), embeds=conditioning(1, 1), pooled=None, scale=1.0)
    unet = ToyUNet()
    with negative_pass(unet, found), pytest.raises(ValueError, match="encoder_hidden_states"):
        unet(torch.ones(2, 1, 2, 2), torch.tensor(1.0), encoder_hidden_states=conditioning(1, 0))
