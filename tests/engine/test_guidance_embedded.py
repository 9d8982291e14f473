"""SD1.5 models whose UNet is guidance-embedded (``time_cond_proj_dim`` set: LCM-distilled models, our few-step
student) through the public loader and engine, on a tiny random one built here: LCM in 4 steps by default, a
negative prompt runs a second UNet pass per step (only then) and changes the image."""

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
from pydantic import ValidationError

from imageloop.config import Settings
from imageloop.engine.engine import Engine
from imageloop.engine.families import NEGATIVE_SECOND_PASS
from imageloop.engine.infotext import import_parameters
from imageloop.engine.inventory import list_models
from imageloop.engine.loader import FALLBACK_GUIDANCE, load_model
from imageloop.engine.model_files import content_hash, folder_embeds_guidance
from imageloop.engine.model_profile import model_profile
from imageloop.engine.plan import make_plan
from imageloop.engine.pngmeta import png_parameters_text, split_parameters
from imageloop.engine.request import GenerationRequest
from imageloop.errors import ModelLoadError
from tests import tiny
from tests.tiny import count_calls

SIZE = 64


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
    """The batch size the UNet denoises in each call inside the block (2 per image: a negative pass beside the
    conditional one), seen at its first layer, after anything that joins rows to its call."""
    sizes: list[int] = []

    def hook(_: torch.nn.Module, args: tuple[Any, ...]) -> None:
        sizes.append(int(args[0].shape[0]))

    handle = unet.get_submodule("conv_in").register_forward_pre_hook(hook)
    try:
        yield sizes
    finally:
        handle.remove()


# -- detection and defaults -------------------------------------------------------------------------------------------

def test_guidance_embedding_is_detected_from_the_unet(engine: Engine, lcm_model: Path, tiny_model: Path) -> None:
    model = engine.model
    assert model.guidance_embedded and model.runs_negative_pass and model.negative_unused is None
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


@contextmanager
def unet_timesteps(unet: torch.nn.Module) -> Iterator[list[int]]:
    """The timestep of each UNet call inside the block."""
    seen: list[int] = []

    def hook(_: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        timestep = args[1] if len(args) > 1 else kwargs["timestep"]
        seen.append(int(torch.as_tensor(timestep).reshape(-1)[0]))

    handle = unet.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()


def test_its_own_timesteps_run_for_its_default_steps_and_sampler(lcm_model: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(lcm_model, tmp_path / "student")
    (folder / "imageloop.json").write_text('{"steps": 4, "scheduler": "LCM", "timesteps": [999, 899, 699, 499]}')
    own = Engine(make_settings(tmp_path / "data"), model=folder)
    with unet_timesteps(own.model.pipe.unet) as seen:
        run(own)
    assert seen == [999, 899, 699, 499]
    with unet_timesteps(own.model.pipe.unet) as seen:
        run(own, steps=2)  # another step count: diffusers' own spacing
    assert len(seen) == 2 and seen != [999, 899]
    with unet_timesteps(own.model.pipe.unet) as seen:
        run(own, scheduler="Euler")  # another sampler: its own spacing
    assert len(seen) == 4 and seen != [999, 899, 699, 499]
    # Its images differ from the same weights' without them: another model version.
    assert own.model.version == content_hash(folder) != content_hash(lcm_model)


@pytest.mark.parametrize(("fields", "named"), [
    ('"timesteps": [999, 999, 499, 10]', "strictly decreasing"),
    ('"timesteps": [1000, 700, 499, 10]', "[0, 999]"),
    ('"steps": 3, "timesteps": [999, 700, 499, 10]', "one per step"),
    ('"timesteps": [999, 499]', "one per step"),
    ('"scheduler": "DDIM", "timesteps": [999, 700, 499, 10]', "DDIM does not"),
])
def test_bad_timesteps_are_refused_by_name(lcm_model: Path, tmp_path: Path, fields: str, named: str) -> None:
    folder = shutil.copytree(lcm_model, tmp_path / "student")
    (folder / "imageloop.json").write_text("{" + fields + "}")
    with pytest.raises(ModelLoadError, match="timesteps") as caught:
        load_model(folder, make_settings(tmp_path))
    assert named in str(caught.value)


def test_the_embedded_guidance_is_used(engine: Engine) -> None:
    # The guidance reaches the UNet as an embedding: another value gives another image.
    assert not np.array_equal(pixels(run(engine, guidance_scale=1.5)), pixels(run(engine, guidance_scale=8.0)))


# -- negative prompts ---------------------------------------------------------------------------------------------

def test_a_negative_prompt_changes_the_image_with_a_second_pass_a_step(engine: Engine) -> None:
    with unet_batches(engine.model.pipe.unet) as plain_batches:
        plain = run(engine)
    with unet_batches(engine.model.pipe.unet) as batches:
        negative = run(engine, negative_prompt="blurry dark")
    assert plain_batches == [1, 1, 1, 1] and batches == [2, 2, 2, 2]  # the negative rides in the same call
    assert not np.array_equal(pixels(plain), pixels(negative))
    prompt, written, values = split_parameters(png_parameters_text(negative))
    assert (prompt, written) == ("a red cat", "blurry dark")
    assert "Request negative prompt" not in values and "Style negative prompt" not in values


def test_img2img_takes_the_negative_prompt_too(engine: Engine) -> None:
    source = Image.new("RGB", (SIZE, SIZE), (200, 40, 40))
    buffer = io.BytesIO()
    source.save(buffer, format="PNG")
    fields = {"init_image": buffer.getvalue(), "strength": 0.75}
    with unet_batches(engine.model.pipe.unet) as batches:
        negative = run(engine, negative_prompt="blurry dark", **fields)
    assert batches and set(batches) == {2}
    assert not np.array_equal(pixels(run(engine, **fields)), pixels(negative))


def test_the_negative_is_encoded_and_weighted(engine: Engine) -> None:
    engine.prompt_cache.clear()
    with count_calls(engine.model.pipe.text_encoder) as calls:
        run(engine, prompt="a green dragon over the sea", negative_prompt="ugly lowres hands")
    assert calls[0] == 2  # the prompt and the negative
    # A1111 weights act in the negative as in the prompt: a stronger word steers further away.
    plain, weighted = run(engine, negative_prompt="rain"), run(engine, negative_prompt="(rain:1.6)")
    assert not np.array_equal(pixels(plain), pixels(weighted))


def test_a_style_presets_negative_part_is_used(engine: Engine) -> None:
    request = GenerationRequest(prompt="a red cat", style="cinematic", seed=1)
    plan = make_plan(request, None, engine.model, engine.settings)
    assert plan.negative and plan.unused == {}
    _, _, values = split_parameters(png_parameters_text(run(engine, style="cinematic")))
    assert "Style negative prompt" not in values


def test_a_zero_scale_turns_the_negative_pass_off(lcm_model: Path, tmp_path: Path, engine: Engine) -> None:
    settings = make_settings(tmp_path)
    off = Engine(settings.model_copy(update={"engine": settings.engine.model_copy(
        update={"embedded_negative_scale": 0.0})}), model=lcm_model)
    with unet_batches(off.model.pipe.unet) as batches:
        png = run(off, negative_prompt="blurry dark")
    assert batches == [1, 1, 1, 1] and np.array_equal(pixels(png), pixels(run(engine)))
    with pytest.raises(ValidationError, match="embedded_negative_scale"):
        Settings(data_dir=tmp_path, engine={"embedded_negative_scale": -1.0})


def test_a_batch_runs_the_negative_pass_only_for_images_with_a_negative(engine: Engine) -> None:
    requests = [GenerationRequest(prompt="a red cat", seed=7, width=SIZE, height=SIZE),
                GenerationRequest(prompt="a blue bird", negative_prompt="blurry dark", seed=8, width=SIZE,
                                  height=SIZE)]
    engine.result_cache.clear()
    with unet_batches(engine.model.pipe.unet) as batches:
        together = engine.generate_many(requests)
    assert batches == [3, 3, 3, 3]  # two images, one negative
    engine.result_cache.clear()
    alone = [engine.generate(request) for request in requests]
    assert not any(result.from_cache for result in alone)
    for mine, solo in zip(together, alone, strict=True):
        difference = np.abs(pixels(mine.images[0].png) - pixels(solo.images[0].png)).max()
        assert difference <= 2  # up to floating-point noise of another batch size


def test_pasted_negative_prompt_is_taken(engine: Engine) -> None:
    pasted = "a red cat\nNegative prompt: blurry\nSteps: 4, Sampler: LCM, CFG scale: 2, Seed: 3, Size: 64x64"
    imported = import_parameters(pasted, engine.settings, family="sd15")
    assert imported.ignored == [] and imported.request.negative_prompt == "blurry"


# -- what the page, the API and doctor show --------------------------------------------------------------------

def test_profile_and_inventory_name_it(lcm_model: Path, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    profile = model_profile(lcm_model, settings)
    assert (profile.family, profile.label, profile.guidance_embedded) == ("sd15", "SD1.5 (guidance-embedded)", True)
    rules = {rule.name: rule for rule in profile.controls}
    assert rules["negative_prompt"].applies and rules["negative_prompt"].why == NEGATIVE_SECOND_PASS
    assert rules["scheduler"].applies and rules["clip_skip"].applies
    shutil.copytree(lcm_model, settings.models_dir / "lcm")
    [entry] = [entry for entry in list_models(settings) if entry.name == "lcm"]
    assert entry.guidance_embedded and "a negative prompt costs a second pass" in entry.describe()


def test_an_sdxl_guidance_embedded_model_takes_a_negative_prompt(tmp_path: Path) -> None:
    model = tiny.save_sdxl_guidance_embedded(tmp_path / "lcm-xl")
    sdxl = Engine(make_settings(tmp_path), model=model)
    with unet_batches(sdxl.model.pipe.unet) as plain_batches:
        plain = run(sdxl)
    with unet_batches(sdxl.model.pipe.unet) as batches:
        negative = run(sdxl, negative_prompt="blurry dark")
    assert plain_batches == [1] * 4 and batches == [2] * 4
    assert not np.array_equal(pixels(plain), pixels(negative))


def test_training_refuses_a_guidance_embedded_model(lcm_model: Path, tmp_path: Path) -> None:
    from imageloop.errors import UnsupportedModelError

    model = load_model(lcm_model, Settings(data_dir=tmp_path / "data", engine={"device": "cpu"}))
    with pytest.raises(UnsupportedModelError, match=r"a private LoRA trains with the noise-prediction loss; .* "
                                                    r"LCM-distilled"):
        model.require_sd15("a private LoRA")
