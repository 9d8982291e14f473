"""The Engine end to end on tiny models: determinism, seeds, defaults, variants, progress, caches, batching."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imageloop.config import Settings
from imageloop.engine import loader, model_files
from imageloop.engine.engine import Engine
from imageloop.engine.pngmeta import read_png_parameters
from imageloop.engine.progress import CancelToken
from imageloop.engine.request import GenerationRequest
from imageloop.engine.schedulers import SCHEDULER_NAMES
from imageloop.errors import GenerationCancelled, InvalidRequestError, ModelLoadError, UnknownNameError
from imageloop.prompts.styles import apply_style
from tests import tiny

MODEL_DEFAULTS = {"steps": 2, "guidance_scale": 5.0, "scheduler": "Euler", "width": 64, "height": 64}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("engine-models")
    return {
        "sd15": tiny.save_sd15(root / "sd15", model_defaults=MODEL_DEFAULTS),
        "sdxl": tiny.save_sdxl(root / "sdxl", model_defaults=MODEL_DEFAULTS),
        "controlnet": tiny.save_controlnet(root / "controlnet"),
    }


def make_settings(root: Path, **engine: object) -> Settings:
    return Settings(data_dir=root, engine={"device": "cpu", **engine})


@pytest.fixture(scope="module")
def engine(model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Engine:
    settings = make_settings(tmp_path_factory.mktemp("data"))
    return Engine(settings, model=model_dirs["sd15"], controlnet=model_dirs["controlnet"])


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def png_of(color: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_same_request_and_seed_give_identical_bytes(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    # Two engines without a result cache: the bytes come from two real runs.
    request = GenerationRequest(prompt="a red (cat:1.3) in the rain", negative_prompt="blurry", seed=42)
    runs = [Engine(make_settings(tmp_path, result_cache_size=0), model=model_dirs["sd15"]).generate(request)
            for _ in range(2)]
    assert runs[0].images[0].png == runs[1].images[0].png
    assert not runs[0].from_cache and not runs[1].from_cache
    other = Engine(make_settings(tmp_path, result_cache_size=0), model=model_dirs["sd15"]).generate(
        request.model_copy(update={"seed": 43}))
    assert other.images[0].png != runs[0].images[0].png


def test_result_records_model_and_resolved_request(engine: Engine) -> None:
    result = engine.generate(GenerationRequest(prompt="a dog", seed=5))
    r = result.request
    assert (r.steps, r.guidance_scale, r.scheduler, r.width, r.height, r.seed) == (2, 5.0, "Euler", 64, 64, 5)
    assert result.model_id == "sd15" and result.model_version == engine.model.version
    image = result.images[0]
    assert (image.seed, image.width, image.height) == (5, 64, 64)
    assert Image.open(io.BytesIO(image.png)).size == (64, 64)
    assert {"check", "encode", "denoise", "png", "total"} <= set(result.timings)


@pytest.mark.parametrize("scheduler", SCHEDULER_NAMES)
def test_every_sampler_name_generates_through_the_engine(engine: Engine, scheduler: str) -> None:
    # Each listed sampler must work in a plain install (LMS needs scipy: an undeclared dependency fails here).
    result = engine.generate(GenerationRequest(prompt="a lighthouse", scheduler=scheduler, seed=3))
    assert result.request.scheduler == scheduler
    assert np.isfinite(pixels(result.images[0].png)).all()
    assert Image.open(io.BytesIO(result.images[0].png)).size == (64, 64)


def test_random_seed_is_recorded_and_not_cached(engine: Engine) -> None:
    request = GenerationRequest(prompt="a bird")
    first, second = engine.generate(request), engine.generate(request)
    assert first.request.seed is not None and first.images[0].seed == first.request.seed
    assert not second.from_cache and first.request.seed != second.request.seed


def test_batch_image_reproduces_alone_from_its_png(engine: Engine) -> None:
    batch = engine.generate(GenerationRequest(prompt="a castle", seed=100, num_images=3))
    assert [image.seed for image in batch.images] == [100, 101, 102]
    assert len({image.png for image in batch.images}) == 3
    again = read_png_parameters(batch.images[2].png)
    assert again.seed == 102 and again.num_images == 1
    alone = engine.generate(again)
    # A batch of 3 and a batch of 1 may differ in float rounding, never in content.
    assert np.abs(pixels(alone.images[0].png) - pixels(batch.images[2].png)).max() <= 2


def test_png_metadata_round_trips_to_the_resolved_request(engine: Engine) -> None:
    result = engine.generate(GenerationRequest(prompt="雨中的猫, monochrome", seed=9, style="cinematic"))
    assert read_png_parameters(result.images[0].png) == result.request


def test_recipe_then_request_override_model_defaults(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    settings.recipes_dir.mkdir(parents=True)
    (settings.recipes_dir / "quick.json").write_text(json.dumps(
        {"name": "quick", "steps": 3, "guidance_scale": 2.0, "scheduler": "DDIM", "style": "cinematic"}))
    engine = Engine(settings, model=model_dirs["sd15"])
    resolved = engine.resolve(GenerationRequest(prompt="x", recipe="quick", seed=1))
    assert (resolved.steps, resolved.guidance_scale, resolved.scheduler, resolved.style) == (3, 2.0, "DDIM",
                                                                                              "cinematic")
    resolved = engine.resolve(GenerationRequest(prompt="x", recipe="quick", steps=7, scheduler="UniPC", seed=1))
    assert (resolved.steps, resolved.guidance_scale, resolved.scheduler) == (7, 2.0, "UniPC")
    with pytest.raises(UnknownNameError) as info:
        engine.generate(GenerationRequest(prompt="x", recipe="missing"))
    assert info.value.field == "recipe"


def test_style_changes_the_encoded_prompt(engine: Engine) -> None:
    engine.generate(GenerationRequest(prompt="a tree", seed=1, style="cinematic"))
    styled, styled_negative = apply_style("a tree", "", "cinematic")
    texts = {key.text for key in engine.prompt_cache._items}
    assert styled in texts and styled_negative in texts and styled != "a tree"


def test_invalid_requests_fail_before_any_model_work(tmp_path: Path) -> None:
    engine = Engine(make_settings(tmp_path, max_steps=10), model=tmp_path / "does-not-exist")
    with pytest.raises(InvalidRequestError) as info:
        engine.generate(GenerationRequest(prompt="x", steps=11))
    assert info.value.field == "steps"
    with pytest.raises(UnknownNameError) as info:
        engine.generate(GenerationRequest(prompt="x", style="no-such-style"))
    assert info.value.field == "style"
    with pytest.raises(InvalidRequestError) as info:
        engine.generate(GenerationRequest(prompt="x", control_image=png_of((0, 0, 0))))
    assert info.value.field == "control_image"
    assert engine._model is None  # nothing was loaded
    with pytest.raises(ModelLoadError, match="does not exist"):
        engine.generate(GenerationRequest(prompt="x"))


def test_no_embedded_model_yet_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The default model is a shipped one; with its folder empty the error names it and says what to do.
    default = make_settings(tmp_path).engine.model
    monkeypatch.setitem(model_files.EMBEDDED_MODELS, default, tmp_path / "missing")
    with pytest.raises(ModelLoadError, match=f"the {default} model is not installed .*pass --model PATH"):
        Engine(make_settings(tmp_path)).generate(GenerationRequest(prompt="x"))


# -- progress and cancel ---------------------------------------------------------------------------------------------


def test_step_callback_reports_every_step(engine: Engine) -> None:
    seen: list[tuple[int, int]] = []
    engine.generate(GenerationRequest(prompt="a ship", seed=3, steps=3),
                    on_step=lambda step, total: seen.append((step, total)) and None)
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_callback_can_stop_the_run(engine: Engine) -> None:
    seen: list[int] = []

    def stop_after_first(step: int, total: int) -> bool:
        seen.append(step)
        return step < 1

    with pytest.raises(GenerationCancelled):
        engine.generate(GenerationRequest(prompt="a ship", seed=4, steps=3), on_step=stop_after_first)
    assert seen == [1]
    # nothing was stored: the same request now runs for real
    assert not engine.generate(GenerationRequest(prompt="a ship", seed=4, steps=3)).from_cache


def test_cancel_token(engine: Engine) -> None:
    token = CancelToken()
    token.cancel()
    with pytest.raises(GenerationCancelled):
        engine.generate(GenerationRequest(prompt="x", seed=1), cancel=token)
    token = CancelToken()
    with pytest.raises(GenerationCancelled):
        engine.generate(GenerationRequest(prompt="x", seed=1, steps=3), cancel=token,
                        on_step=lambda step, total: token.cancel())


class StopsMidStep:
    """A step callback that asks for a stop once ``stop`` is set, and records the steps it was told of."""

    def __init__(self) -> None:
        self.seen: list[int] = []
        self.stop = False

    def __call__(self, step: int, total: int) -> None:
        self.seen.append(step)

    def stop_requested(self) -> bool:
        return self.stop


@pytest.mark.parametrize("how", ["callback", "token"])
def test_a_stop_asked_during_a_step_takes_effect_inside_that_step(engine: Engine, how: str) -> None:
    unet = engine.model.pipe.unet
    callback, token = StopsMidStep(), CancelToken()

    def ask_to_stop(*_: object) -> None:  # the cancel arrives while the first block of step 1 runs
        callback.stop = True
        token.cancel()

    first, last = unet.down_blocks[0].resnets[0], unet.up_blocks[-1].resnets[-1]
    handle = first.register_forward_pre_hook(ask_to_stop)
    try:
        with tiny.count_calls(last) as later_blocks, pytest.raises(GenerationCancelled):
            engine.generate(GenerationRequest(prompt=f"a slow ship ({how})", seed=8, steps=3), on_step=callback,
                            cancel=token if how == "token" else None)
    finally:
        handle.remove()
    assert callback.seen == [] and later_blocks[0] == 0  # step 1 never finished: stopped inside the UNet
    done = engine.generate(GenerationRequest(prompt=f"a slow ship ({how})", seed=8, steps=3), on_step=StopsMidStep())
    assert len(done.images) == 1  # the hooks are gone: the next run is whole


# -- caches ----------------------------------------------------------------------------------------------------------


def test_repeated_prompt_skips_the_text_encoder(engine: Engine) -> None:
    text_encoder = engine.model.pipe.text_encoder
    with tiny.count_calls(text_encoder) as calls:
        engine.generate(GenerationRequest(prompt="a unique green dragon", negative_prompt="ugly", seed=1))
    assert calls[0] == 2  # prompt and negative prompt, one chunk each
    with tiny.count_calls(text_encoder) as calls:
        engine.generate(GenerationRequest(prompt="a unique green dragon", negative_prompt="ugly", seed=2))
    assert calls[0] == 0


def test_repeated_request_and_seed_skip_the_unet(engine: Engine) -> None:
    request = GenerationRequest(prompt="a white house", seed=77, num_images=2)
    unet = engine.model.pipe.unet
    with tiny.count_calls(unet) as calls:
        first = engine.generate(request)
    assert calls[0] == 2  # two steps, CFG batched into one UNet call per step
    with tiny.count_calls(unet) as calls:
        second = engine.generate(request)
    assert calls[0] == 0 and second.from_cache and not first.from_cache
    assert engine.cache_stats()["result"].hits >= 1
    assert [i.png for i in second.images] == [i.png for i in first.images]
    assert second.request == first.request


# -- img2img and ControlNet --------------------------------------------------------------------------------------------


def test_img2img_uses_the_init_image(engine: Engine) -> None:
    seen: list[tuple[int, int]] = []
    red = engine.generate(GenerationRequest(prompt="a car", seed=1, steps=4, init_image=png_of((255, 0, 0), (72, 64)),
                                            strength=0.5), on_step=lambda s, t: seen.append((s, t)) and None)
    assert (red.request.width, red.request.height, red.request.strength) == (72, 64, 0.5)
    assert seen[-1] == (2, 2)  # strength 0.5 of 4 steps
    assert Image.open(io.BytesIO(red.images[0].png)).size == (72, 64)
    blue = engine.generate(GenerationRequest(prompt="a car", seed=1, steps=4, init_image=png_of((0, 0, 255), (72, 64)),
                                             strength=0.5))
    # The tiny VAE is random, so colours do not survive; the source still decides the output.
    assert red.images[0].png != blue.images[0].png
    default_strength = engine.resolve(GenerationRequest(prompt="a car", init_image=png_of((0, 0, 0))))
    assert default_strength.strength == 0.75


def test_controlnet_follows_the_control_image(engine: Engine) -> None:
    base = engine.model.pipe
    results = [engine.generate(GenerationRequest(prompt="a flower", seed=1, control_image=png_of(color),
                                                 controlnet_conditioning_scale=2.0)) for color in ((0, 0, 0),
                                                                                                   (255, 255, 255))]
    assert results[0].images[0].png != results[1].images[0].png
    assert results[0].request.controlnet_conditioning_scale == 2.0
    variant = engine.model.variants[loader.Mode.CONTROLNET]
    assert variant.unet is base.unet and type(variant).__name__ == "StableDiffusionControlNetPipeline"


def test_sdxl_model(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    engine = Engine(make_settings(tmp_path), model=model_dirs["sdxl"], controlnet=model_dirs["controlnet"])
    result = engine.generate(GenerationRequest(prompt="a " + "very " * 100 + "long prompt", seed=1))
    assert engine.model.architecture is model_files.Architecture.SDXL
    assert Image.open(io.BytesIO(result.images[0].png)).size == (64, 64)
    with pytest.raises(ModelLoadError, match="does not fit"):  # an SD1.5 ControlNet on an SDXL model
        engine.generate(GenerationRequest(prompt="x", seed=1, control_image=png_of((0, 0, 0))))


# -- batching --------------------------------------------------------------------------------------------------------


def test_generate_many_runs_compatible_requests_in_one_call(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    engine = Engine(make_settings(tmp_path, result_cache_size=0), model=model_dirs["sd15"])
    requests = [
        GenerationRequest(prompt="a cat", seed=1),
        GenerationRequest(prompt="a dog, at night", negative_prompt="blurry", seed=2, num_images=2),
        GenerationRequest(prompt="a bird", seed=3, style="cinematic"),
    ]
    unet = engine.model.pipe.unet
    with tiny.count_calls(unet) as calls:
        results = engine.generate_many(requests)
    assert calls[0] == 2  # one pipeline call: 2 steps
    assert [len(r.images) for r in results] == [1, 2, 1]
    assert [r.images[0].seed for r in results] == [1, 2, 3]
    # Same prompt lengths as alone (one chunk each), so only float rounding may differ. (Prompts of different
    # lengths get padded to the longest with empty chunks, as A1111 does, which changes them slightly.)
    for request, result in zip(requests, results, strict=True):
        alone = engine.generate(request)
        for batched, single in zip(result.images, alone.images, strict=True):
            assert np.abs(pixels(batched.png) - pixels(single.png)).max() <= 2


def test_generate_many_splits_incompatible_requests(engine: Engine) -> None:
    requests = [GenerationRequest(prompt="a cat", seed=11), GenerationRequest(prompt="a cat", seed=12, steps=3),
                GenerationRequest(prompt="a cat", seed=13, init_image=png_of((9, 9, 9)))]
    with tiny.count_calls(engine.model.pipe.unet) as calls:
        results = engine.generate_many(requests)
    assert calls[0] == 2 + 3 + 1  # three calls: 2 steps, 3 steps, img2img 0.75 x 2 steps -> 1
    assert [r.request.steps for r in results] == [2, 3, 2]
    assert results[2].request.mode == "img2img"


def test_generate_many_pads_prompts_of_different_lengths_and_reports_steps(engine: Engine) -> None:
    requests = [GenerationRequest(prompt="a cat", seed=21), GenerationRequest(prompt="a dog, " * 60, seed=22)]
    seen: list[tuple[int, int]] = []
    with tiny.count_calls(engine.model.pipe.unet) as calls:
        results = engine.generate_many(requests, on_step=lambda step, total: seen.append((step, total)) and None)
    assert calls[0] == 2 and len(results) == 2 and seen == [(1, 2), (2, 2)]
    with pytest.raises(GenerationCancelled):
        engine.generate_many([GenerationRequest(prompt="a cat", seed=31), GenerationRequest(prompt="a cow", seed=32)],
                             on_step=lambda step, total: False)


def test_recipe_loras_apply_and_never_leak(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    from tests.engine.tiny_loras import make_diffusers_lora

    settings = make_settings(tmp_path, result_cache_size=0)
    make_diffusers_lora(settings.loras_dir / "detail.safetensors")
    settings.recipes_dir.mkdir(parents=True)
    (settings.recipes_dir / "detailed.json").write_text(json.dumps(
        {"name": "detailed", "loras": [{"file": "detail", "weight": 0.8}]}))
    engine = Engine(settings, model=model_dirs["sd15"])
    plain = GenerationRequest(prompt="a dark forest", seed=1)
    before = engine.generate(plain)
    with tiny.count_calls(engine.model.pipe.text_encoder) as calls:
        styled = engine.generate(plain.model_copy(update={"recipe": "detailed"}))
    # The LoRA also changes the text encoder, so the cached plain encodings must not be reused.
    assert calls[0] == 2
    assert styled.images[0].png != before.images[0].png
    after = engine.generate(plain)
    assert after.images[0].png == before.images[0].png  # recipe off again: no weights leak


def test_model_with_its_own_word_tokenizer(tmp_path: Path) -> None:
    # Shaped like the embedded model: word-level EN + per-character ZH tokenizer, max length 32.
    folder = tmp_path / "word-model"
    tiny.sd15_word_pipeline().save_pretrained(folder)
    (folder / "imageloop.json").write_text(json.dumps({"steps": 2, "scheduler": "DDIM"}))
    engine = Engine(make_settings(tmp_path, result_cache_size=0), model=folder)
    prompt = "(雨中的猫:1.3), 黑白, " + "a cat in the city at night, " * 10  # > 3 chunks of 30 tokens
    runs = [engine.generate(GenerationRequest(prompt=prompt, negative_prompt="blurry", seed=8)) for _ in range(2)]
    assert runs[0].images[0].png == runs[1].images[0].png
    assert read_png_parameters(runs[0].images[0].png).prompt == prompt
    tail = engine.generate(GenerationRequest(prompt=prompt + " dragon", negative_prompt="blurry", seed=8))
    assert tail.images[0].png != runs[0].images[0].png  # the end of a long prompt still counts


def test_prompt_weighting_comes_from_the_model_unless_the_settings_choose(tmp_path: Path) -> None:
    folder = tmp_path / "word-model"
    tiny.sd15_word_pipeline().save_pretrained(folder)
    (folder / "imageloop.json").write_text(json.dumps({"steps": 2, "scheduler": "DDIM",
                                                       "prompt_weighting": "context"}))
    by_model = Engine(make_settings(tmp_path), model=folder)
    forced = Engine(make_settings(tmp_path, prompt_weighting="a1111"), model=folder)
    assert (by_model.prompt_weighting, forced.prompt_weighting) == ("context", "a1111")
    weighted = GenerationRequest(prompt="a (cat:1.8) in the city", seed=3)
    plain = GenerationRequest(prompt="a cat in the city", seed=3)
    assert by_model.generate(weighted).images[0].png != forced.generate(weighted).images[0].png
    assert by_model.generate(plain).images[0].png == forced.generate(plain).images[0].png
