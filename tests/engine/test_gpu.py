"""The GPU path end to end on CUDA: tiny SD1.5 in fp16 and tiny FLUX.1 in bf16, channels-last, SDPA attention.

Runs on a machine with a CUDA device (``pytest -m gpu``); skipped elsewhere.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imageloop.config import Settings
from imageloop.engine.acceleration import cuda_memory
from imageloop.engine.engine import Engine
from imageloop.engine.request import GenerationRequest
from tests import tiny
from tests.engine import flow_models as fm

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the GPU path needs one")]

SIZE = 64
SD15_DEFAULTS = {"steps": 2, "guidance_scale": 5.0, "scheduler": "Euler", "width": SIZE, "height": SIZE}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gpu-models")
    return {"sd15": tiny.save_sd15(root / "sd15", model_defaults=SD15_DEFAULTS),
            "flux": fm.save_folder(fm.flux_pipeline(), root / "flux")}


def image(engine: Engine, **fields: object) -> np.ndarray:
    request = GenerationRequest(**{"prompt": "a red cat", "seed": 7, "steps": 2, "width": SIZE, "height": SIZE,
                                   **fields})
    png = engine.generate(request).images[0].png
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize(("name", "dtype", "attention"), [
    ("sd15", "float16", "AttnProcessor2_0"), ("flux", "bfloat16", "FluxAttnProcessor"),
])
def test_runs_on_cuda_in_half_precision(models: dict[str, Path], tmp_path: Path, name: str, dtype: str,
                                        attention: str) -> None:
    settings = Settings(data_dir=tmp_path, engine={"device": "cuda", "dtype": dtype, "channels_last": "auto",
                                                   "result_cache_size": 0})
    engine = Engine(settings, model=str(models[name]))
    model = engine.model
    assert model.device.type == "cuda" and str(model.dtype) == f"torch.{dtype}"
    assert model.acceleration.channels_last
    assert attention in model.acceleration.attention
    denoiser = model.pipe.unet if name == "sd15" else model.pipe.transformer
    assert next(denoiser.parameters()).device.type == "cuda"
    first, again = image(engine), image(engine)
    assert first.shape == (SIZE, SIZE, 3) and first.std() > 0
    assert np.array_equal(first, again)  # seeded runs repeat on the GPU too
    assert cuda_memory() is not None


def test_auto_dtype_is_fp16_on_cuda(models: dict[str, Path], tmp_path: Path) -> None:
    engine = Engine(Settings(data_dir=tmp_path, engine={"device": "auto"}), model=str(models["sd15"]))
    assert engine.model.device.type == "cuda" and engine.model.dtype == torch.float16


@pytest.mark.parametrize("offload", ["model", "sequential"])
def test_cpu_offload_generates(models: dict[str, Path], tmp_path: Path, offload: str) -> None:
    settings = Settings(data_dir=tmp_path, engine={"device": "cuda", "cpu_offload": offload})
    engine = Engine(settings, model=str(models["sd15"]))
    assert engine.model.acceleration.cpu_offload == offload
    assert image(engine).shape == (SIZE, SIZE, 3)


def test_compile_on_cuda(models: dict[str, Path], tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, engine={"device": "cuda", "compile": True})
    engine = Engine(settings, model=str(models["sd15"]))
    assert engine.model.acceleration.compile_s is not None
    plain = Engine(Settings(data_dir=tmp_path / "plain", engine={"device": "cuda"}), model=str(models["sd15"]))
    assert np.abs(image(engine) - image(plain)).max() <= 4  # fp16 kernels fused differently: rounding only
