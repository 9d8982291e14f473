"""SD1.5 models whose UNet is guidance-embedded (``time_cond_proj_dim`` set: LCM-distilled models, our few-step
student) through the public loader and engine, on a tiny random one built here: LCM in 4 steps by default, a
negative prompt runs but is reported as not used, never encoded, and changes nothing."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from imageloop.config import Settings
from imageloop.engine.engine import Engine
from imageloop.engine.families import NEGATIVE_NOT_USED_EMBEDDED
from imageloop.engine.infotext import import_parameters
from imageloop.engine.inventory import list_models
from imageloop.engine.loader import FALLBACK_GUIDANCE, load_model
from imageloop.engine.model_files import folder_embeds_guidance
from imageloop.engine.model_profile import model_profile
from imageloop.engine.plan import make_plan
from imageloop.engine.pngmeta import png_parameters_text, split_parameters
from imageloop.engine.request import GenerationRequest
from tests import tiny
from tests.tiny import count_calls

SIZE = 64
UNUSED = NEGATIVE_NOT_USED_EMBEDDED


@pytest.fixture(scope="module")
def lcm_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.save_sd15_guidance_embedded(tmp_path_factory.mktemp("lcm") / "lcm-tiny")


def make_settings(root: Path) -> Settings:
    return Settings(data_dir=root, engine={"device": "cpu", "cpu_autocast": "off"})


@pytest.fixture(scope="module")
def engine(lcm_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return Engine(make_settings(tmp_path_factory.mktemp("data")), model=lcm_model)


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def run(engine: Engine, **fields: object) -> bytes:
    request = GenerationRequest(**{"prompt": "a red cat", "seed": 7, "width": SIZE, "height": SIZE, **fields})
    return engine.generate(request).images[0].png


@contextmanager
def unet_batches(unet: torch.nn.Module) -> Iterator[list[int]]:
    """The batch size of every UNet call inside the block (2 per image would be a negative pass beside it)."""
    sizes: list[int] = []

    def hook(_: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        sample = args[0] if args else kwargs["sample"]
        sizes.append(int(sample.shape[0]))

    handle = unet.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield sizes
    finally:
        handle.remove()


# -- detection and defaults -------------------------------------------------------------------------------------------

def test_guidance_embedding_is_detected_from_the_unet(engine: Engine, lcm_model: Path, tiny_model: Path) -> None:
    model = engine.model
    assert model.guidance_embedded and not model.runs_negative_pass
    assert model.negative_unused == UNUSED
    assert folder_embeds_guidance(lcm_model) and not folder_embeds_guidance(tiny_model)
    plain = load_model(tiny_model, make_settings(lcm_model.parent))
    assert not plain.guidance_embedded and plain.runs_negative_pass and plain.negative_unused is None


def test_without_its_own_defaults_it_runs_lcm_in_4_steps_and_one_pass_a_step(engine: Engine) -> None:
    defaults = engine.model.defaults
    assert (defaults.steps, defaults.scheduler, defaults.guidance_scale) == (4, "LCM", FALLBACK_GUIDANCE)
    with unet_batches(engine.model.pipe.unet) as batches:
        text = png_parameters_text(run(engine, prompt="a blue bird"))
    assert batches == [1, 1, 1, 1]  # 4 steps, no unconditional pass beside the conditional one
    assert type(engine.model.pipe.scheduler).__name__ == "LCMScheduler"
    assert "Steps: 4" in text and "Sampler: LCM" in text and f"CFG scale: {FALLBACK_GUIDANCE:g}" in text


def test_its_imageloop_json_wins(lcm_model: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(lcm_model, tmp_path / "student")
    (folder / "imageloop.json").write_text('{"steps": 3, "guidance_scale": 4, "scheduler": "Euler"}')
    defaults = load_model(folder, make_settings(tmp_path)).defaults
    assert (defaults.steps, defaults.scheduler, defaults.guidance_scale) == (3, "Euler", 4.0)


def test_the_embedded_guidance_is_used(engine: Engine) -> None:
    # The guidance reaches the UNet as an embedding: another value gives another image.
    assert not np.array_equal(pixels(run(engine, guidance_scale=1.5)), pixels(run(engine, guidance_scale=8.0)))


# -- negative prompts ---------------------------------------------------------------------------------------------

def test_a_negative_prompt_runs_changes_nothing_and_is_reported_unused(engine: Engine) -> None:
    plain = run(engine)
    negative = run(engine, negative_prompt="blurry dark")
    assert np.array_equal(pixels(plain), pixels(negative))
    prompt, written, values = split_parameters(png_parameters_text(negative))
    assert (prompt, written) == ("a red cat", "blurry dark")  # the request as it was asked
    assert values["Request negative prompt"] == UNUSED and "Style negative prompt" not in values
    assert "Request negative prompt" not in png_parameters_text(plain)


def test_the_negative_prompt_is_not_encoded(engine: Engine) -> None:
    engine.prompt_cache.clear()  # nothing answered from earlier runs: neither the prompt nor an empty negative
    with count_calls(engine.model.pipe.text_encoder) as calls:
        run(engine, prompt="a green dragon over the sea", negative_prompt="ugly lowres hands")
    assert calls[0] == 1  # the prompt only


def test_a_style_presets_negative_part_is_reported_unused(engine: Engine) -> None:
    text = png_parameters_text(run(engine, style="cinematic", negative_prompt="rain"))
    _, _, values = split_parameters(text)
    assert values["Style negative prompt"] == UNUSED and values["Request negative prompt"] == UNUSED
    request = GenerationRequest(prompt="a red cat", style="cinematic", seed=1)
    plan = make_plan(request, None, engine.model, engine.settings)
    assert plan.negative == "" and plan.unused == {"Style negative prompt": UNUSED}


def test_pasted_negative_prompt_is_reported_and_our_own_png_reads_back(engine: Engine) -> None:
    pasted = "a red cat\nNegative prompt: blurry\nSteps: 4, Sampler: LCM, CFG scale: 2, Seed: 3, Size: 64x64"
    imported = import_parameters(pasted, engine.settings, family="sd15", guidance_embedded=True)
    assert [str(item) for item in imported.ignored] == [f"Negative prompt: blurry — {UNUSED}"]
    assert imported.request.negative_prompt == "blurry"  # it runs (with no effect), as a typed one does
    assert import_parameters(pasted, engine.settings, family="sd15").ignored == []
    ours = png_parameters_text(run(engine, style="cinematic", negative_prompt="rain"))
    again = import_parameters(ours, engine.settings, family="sd15", guidance_embedded=True)
    assert [item.name for item in again.ignored] == ["Negative prompt"]


# -- what the page, the API and doctor show --------------------------------------------------------------------

def test_profile_and_inventory_name_it(lcm_model: Path, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    profile = model_profile(lcm_model, settings)
    assert (profile.family, profile.label, profile.guidance_embedded) == ("sd15", "SD1.5 (guidance-embedded)", True)
    rules = {rule.name: rule for rule in profile.controls}
    assert not rules["negative_prompt"].applies and "no unconditional pass" in str(rules["negative_prompt"].why)
    assert rules["scheduler"].applies and rules["clip_skip"].applies
    shutil.copytree(lcm_model, settings.models_dir / "lcm")
    [entry] = [entry for entry in list_models(settings) if entry.name == "lcm"]
    assert entry.guidance_embedded and "guidance-embedded" in entry.describe()
