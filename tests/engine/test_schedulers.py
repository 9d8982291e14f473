"""A1111 sampler names -> diffusers schedulers."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from imageloop.engine.schedulers import (
    SCHEDULER_NAMES,
    SCHEDULERS,
    canonical_scheduler_name,
    make_scheduler,
    scheduler_name_for,
)
from imageloop.errors import UnknownNameError
from tests.tiny import make_scheduler as tiny_scheduler
from tests.tiny import sd15_pipeline

REQUIRED = ("Euler", "Euler a", "DPM++ 2M", "DPM++ 2M Karras", "DDIM", "UniPC", "Heun", "LMS")


@pytest.fixture(scope="module")
def pipe():  # type: ignore[no-untyped-def]
    return sd15_pipeline()


def test_required_names_are_known() -> None:
    assert set(REQUIRED) <= set(SCHEDULER_NAMES)


def test_names_match_case_and_spacing_insensitively() -> None:
    assert canonical_scheduler_name("euler A") == "Euler a"
    assert canonical_scheduler_name("  dpm++   2m karras ") == "DPM++ 2M Karras"


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(UnknownNameError) as info:
        canonical_scheduler_name("DPM fast")
    assert info.value.field == "scheduler"
    assert "Euler a" in info.value.known and "DDIM" in str(info.value)


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_every_sampler_denoises_to_a_finite_sample(name: str) -> None:
    # A toy "model" predicting a fixed fraction of the input keeps this fast while running each scheduler's real
    # step function (with a seeded generator, as the pipelines pass it).
    scheduler = make_scheduler(name, dict(tiny_scheduler().config))
    assert isinstance(scheduler, SCHEDULERS[name].scheduler_class)
    scheduler.set_timesteps(4)
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 4, 8, 8, generator=generator) * scheduler.init_noise_sigma
    extra = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(sample, t)
        sample = scheduler.step(0.5 * model_input, t, sample, **extra).prev_sample
    assert torch.isfinite(sample).all()


def test_samplers_really_differ_in_a_pipeline(pipe) -> None:  # type: ignore[no-untyped-def]
    images = {}
    for name in ("Euler", "Euler a"):
        pipe.scheduler = make_scheduler(name, dict(tiny_scheduler().config))
        images[name] = pipe("a cat", num_inference_steps=2, height=64, width=64, output_type="np",
                            generator=torch.Generator().manual_seed(0)).images
        assert np.isfinite(images[name]).all()
    assert not np.allclose(images["Euler"], images["Euler a"])


def test_karras_flag_of_the_stored_config_does_not_leak() -> None:
    karras = make_scheduler("DPM++ 2M Karras", dict(tiny_scheduler().config))
    assert karras.config.use_karras_sigmas is True
    plain = make_scheduler("DPM++ 2M", dict(karras.config))
    assert plain.config.use_karras_sigmas is False
    deis = make_scheduler("DEIS", dict(make_scheduler("DPM++ 2M SDE", dict(karras.config)).config))
    assert deis.config.algorithm_type == "deis"


def test_model_config_is_kept() -> None:
    config = dict(tiny_scheduler().config)
    config.update(prediction_type="v_prediction", beta_end=0.02)
    scheduler = make_scheduler("UniPC", config)
    assert scheduler.config.prediction_type == "v_prediction"
    assert scheduler.config.beta_end == pytest.approx(0.02)


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_a_built_scheduler_is_recognised_by_name(name: str) -> None:
    assert scheduler_name_for(make_scheduler(name, dict(tiny_scheduler().config))) == name
