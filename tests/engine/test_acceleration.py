"""The GPU-path settings on the CPU: channels-last, torch.compile, CPU offload's named error, SDPA attention."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from imageloop.config import Settings, load_settings
from imageloop.engine.acceleration import check_offload, wants_channels_last
from imageloop.engine.engine import Engine
from imageloop.engine.loader import load_model, resolve_device
from imageloop.engine.model_files import Architecture
from imageloop.engine.request import GenerationRequest
from imageloop.errors import ConfigError, ModelLoadError
from tests import tiny

MODEL_DEFAULTS = {"steps": 2, "guidance_scale": 5.0, "scheduler": "Euler", "width": 64, "height": 64}


@pytest.fixture(scope="module")
def sd15(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.save_sd15(tmp_path_factory.mktemp("accel") / "sd15", model_defaults=MODEL_DEFAULTS)


def make_settings(root: Path, **engine: object) -> Settings:
    return Settings(data_dir=root, engine={"device": "cpu", "cpu_autocast": "off", **engine})


def generate(settings: Settings, model: Path) -> np.ndarray:
    png = Engine(settings, model=str(model)).generate(GenerationRequest(prompt="a red cat", seed=3)).images[0].png
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def test_defaults_leave_the_cpu_path_as_it_was(tmp_path: Path) -> None:
    engine = load_settings(data_dir=tmp_path).engine
    assert (engine.channels_last, engine.compile, engine.cpu_offload) == ("auto", False, "off")
    assert not wants_channels_last("auto", torch.device("cpu"))
    assert wants_channels_last("auto", torch.device("cuda"))
    assert not wants_channels_last("off", torch.device("cuda"))


@pytest.mark.parametrize(("engine", "field"), [
    ({"cpu_offload": "always"}, "engine.cpu_offload"), ({"channels_last": "yes"}, "engine.channels_last"),
    ({"compile": "sometimes"}, "engine.compile"),
])
def test_bad_values_name_the_setting(tmp_path: Path, engine: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_settings(data_dir=tmp_path, engine=engine)


def test_offload_on_a_cpu_device_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cpu_offload='model' needs a CUDA device; engine\.device is 'cpu'"):
        load_settings(data_dir=tmp_path, engine={"device": "cpu", "cpu_offload": "model"})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
@pytest.mark.parametrize("offload", ["model", "sequential"])
def test_offload_without_cuda_is_a_named_load_error(sd15: Path, tmp_path: Path, offload: str) -> None:
    settings = Settings(data_dir=tmp_path, engine={"device": "auto", "cpu_offload": offload})
    with pytest.raises(ModelLoadError, match=rf"engine\.cpu_offload='{offload}' needs a CUDA device.*no CUDA"):
        load_model(str(sd15), settings)
    with pytest.raises(ModelLoadError, match="needs a CUDA device"):
        check_offload("model", torch.device("cpu"))


def test_attention_is_sdpa_and_reported(sd15: Path, tmp_path: Path) -> None:
    model = load_model(str(sd15), make_settings(tmp_path))
    assert model.acceleration.attention == "AttnProcessor2_0"
    assert not model.acceleration.channels_last and not model.acceleration.compiled
    assert model.dtype == torch.float32  # fp32 stays on the CPU


def test_channels_last_on_cpu_gives_the_same_image(sd15: Path, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, channels_last="on")
    model = load_model(str(sd15), settings)
    assert model.acceleration.channels_last
    assert model.pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert model.pipe.vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    difference = np.abs(generate(settings, sd15) - generate(make_settings(tmp_path / "plain"), sd15))
    assert difference.max() <= 2  # the same maths in another memory order: rounding only


def test_compile_setting_compiles_the_unet_and_times_the_warm_up(
        sd15: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    compiled: list[str] = []

    def record(self: torch.nn.Module, *args: Any, **kwargs: Any) -> None:
        compiled.append(type(self).__name__)  # the real compile takes ~50 s on 2 CPU cores: see the slow test

    monkeypatch.setattr(torch.nn.Module, "compile", record)
    engine = Engine(make_settings(tmp_path, compile=True), model=str(sd15))
    first = engine.generate(GenerationRequest(prompt="a red cat", seed=3))
    model = engine.model
    assert compiled == ["UNet2DConditionModel"]
    assert model.acceleration.compiled and model.acceleration.compile_s is not None
    assert first.timings["compile"] == model.acceleration.compile_s <= first.timings["load"]
    assert "compile" not in engine.generate(GenerationRequest(prompt="a red cat", seed=4)).timings


@pytest.mark.slow
def test_compile_really_runs_on_the_cpu(sd15: Path, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, compile=True)
    engine = Engine(settings, model=str(sd15))
    assert engine.model.acceleration.compile_s is not None
    png = engine.generate(GenerationRequest(prompt="a red cat", seed=3)).images[0].png
    compiled = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    assert np.abs(compiled - generate(make_settings(tmp_path / "plain"), sd15)).max() <= 2


@pytest.mark.parametrize(("device", "architecture", "dtype"), [
    ("cuda", Architecture.SD15, torch.float16), ("cuda", Architecture.SDXL, torch.float16),
    ("cuda", Architecture.FLUX, torch.bfloat16), ("cuda", Architecture.SD3, torch.float16),
    ("cpu", Architecture.FLUX, torch.float32), ("cpu", Architecture.SD15, torch.float32),
])
def test_auto_dtype_is_half_on_cuda_and_fp32_on_the_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, device: str,
                                                        architecture: Architecture, dtype: torch.dtype) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # only resolution runs: nothing touches a GPU
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    settings = Settings(data_dir=tmp_path, engine={"device": device})
    assert resolve_device(settings, architecture) == (torch.device(device), dtype)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)  # pre-Ampere cards
    assert resolve_device(settings, Architecture.FLUX)[1] == (torch.float16 if device == "cuda" else torch.float32)
