"""CPU bf16 autocast of the denoising (engine.cpu_autocast): when it turns on, what it changes, what it keeps."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imageloop.engine import autocast as autocast_module
from imageloop.engine.autocast import autocast_name, resolve_autocast
from imageloop.engine.engine import Engine
from imageloop.engine.pngmeta import read_png_image_parameters
from imageloop.engine.request import GenerationRequest
from tests.server.kit import save_tiny_model, tiny_settings

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize(("native", "speedup", "on"), [(True, 2.0, True), (True, 0.6, False), (False, 2.0, False)])
def test_auto_needs_native_bf16_that_measures_faster_and_only_fp32_cpu_models_autocast(
    monkeypatch: pytest.MonkeyPatch, native: bool, speedup: float, on: bool
) -> None:
    monkeypatch.setattr(autocast_module, "cpu_has_native_bf16", lambda: native)
    monkeypatch.setattr(autocast_module, "bf16_speedup", lambda: speedup)
    assert resolve_autocast("auto", CPU, torch.float32) == (torch.bfloat16 if on else None)
    assert resolve_autocast("bf16", CPU, torch.float32) == torch.bfloat16  # forced, whatever the CPU
    assert resolve_autocast("off", CPU, torch.float32) is None
    assert resolve_autocast("bf16", CUDA, torch.float32) is None
    assert resolve_autocast("bf16", CPU, torch.bfloat16) is None  # already bf16 weights
    assert (autocast_name(torch.bfloat16), autocast_name(None)) == ("bf16", "off")


def test_the_probe_measures_once_per_process() -> None:
    first = autocast_module.bf16_speedup()
    assert first > 0 and autocast_module.bf16_speedup() == first


def test_bad_setting_is_refused(tmp_path: Path) -> None:
    from imageloop.errors import ConfigError

    with pytest.raises((ConfigError, ValueError), match="cpu_autocast"):
        tiny_settings(tmp_path, tmp_path, engine={"model": "x", "cpu_autocast": "fp8"})


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Engine]:
    folder = tmp_path_factory.mktemp("autocast")
    model = save_tiny_model(folder / "model")
    return {mode: Engine(tiny_settings(folder / mode, model, engine={"model": str(model), "threads": 1,
                                                                     "device": "cpu", "cpu_autocast": mode}))
            for mode in ("off", "bf16")}


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64)


def test_bf16_images_are_close_to_fp32_and_say_so(engines: dict[str, Engine]) -> None:
    request = GenerationRequest(prompt="a red cat", seed=5, num_images=2, steps=4)
    plain, fast = engines["off"].generate(request), engines["bf16"].generate(request)
    assert engines["bf16"].autocast == torch.bfloat16 and engines["off"].autocast is None
    for a, b in zip(plain.images, fast.images, strict=True):
        difference = np.abs(_pixels(a.png) - _pixels(b.png))
        assert difference.mean() < 4.0, difference.mean()  # a few levels of 255 at most, on average
        assert (a.width, a.height) == (b.width, b.height)
    params = read_png_image_parameters(fast.images[0].png)
    assert params.extras == {"Autocast": "bf16"} and params.request.seed == 5
    assert "Autocast" not in read_png_image_parameters(plain.images[0].png).extras
    # Batched (generate_many) and alone give the same bf16 images up to bf16 noise.
    [batched, _] = engines["bf16"].generate_many([request, GenerationRequest(prompt="a dog", seed=9, steps=4)])
    assert np.abs(_pixels(batched.images[0].png) - _pixels(fast.images[0].png)).mean() < 4.0


def test_the_result_cache_key_names_the_autocast(engines: dict[str, Engine]) -> None:
    engine = engines["bf16"]
    pipe = engine.model.pipe
    assert engine._version_key(pipe, "").endswith("|bf16")
    assert engines["off"]._version_key(engines["off"].model.pipe, "").endswith("|off")
    request = GenerationRequest(prompt="a cached fox", seed=3, steps=2)
    first, again = engine.generate(request), engine.generate(request)
    assert again.from_cache and again.images == first.images
