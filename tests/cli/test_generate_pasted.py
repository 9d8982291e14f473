"""``imageloop generate --from-png / --from-text`` with parameters as A1111, Forge and Civitai write them: the same
settings run, and each one that cannot be honoured is a warning line."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from safetensors.torch import save_file
from typer.testing import CliRunner

import imageloop.cli.commands  # noqa: F401  (registers every command on `app`)
from imageloop.cli import app
from imageloop.engine import read_png_parameters
from imageloop.errors import InvalidRequestError
from tests import tiny
from tests.engine.tiny_loras import make_diffusers_lora

FORGE_TEXT = """a lighthouse on a cliff at dusk, <lora:add_detail:0.6>
Negative prompt: easynegative, lowres
Steps: 3, Sampler: DPM++ SDE, Schedule type: Karras, CFG scale: 6, Seed: 42, Size: 64x64, \
Model hash: 9aba26abdf, Model: deliberate_v2, Denoising strength: 0.5, Clip skip: 2, Hires upscale: 1.5, \
Hires steps: 2, Hires upscaler: Latent, Lora hashes: "add_detail: 7c6bad76eb54", \
TI hashes: "easynegative: c74b4e810b03, badhandv4: 5e40d722fc3d", Version: f2.0.1v1.10.1-previous-313-g8a042934"""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.save_sd15(tmp_path_factory.mktemp("cli-pasted") / "tiny",
                          model_defaults={"steps": 2, "scheduler": "Euler"})


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    make_diffusers_lora(data / "loras" / "add_detail.safetensors")
    (data / "embeddings").mkdir(parents=True)
    save_file({"emb_params": torch.randn(2, tiny.TEXT_HIDDEN)}, str(data / "embeddings" / "easynegative.safetensors"))
    return data


def forge_png(path: Path, text: str = FORGE_TEXT) -> Path:
    info = PngInfo()
    info.add_text("parameters", text)
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (20, 40, 60)).save(buffer, format="PNG", pnginfo=info)
    path.write_bytes(buffer.getvalue())
    return path


def test_from_png_of_forge_runs_the_same_settings_and_warns(model_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    result = CliRunner().invoke(app, ["generate", "--from-png", str(forge_png(tmp_path / "forge.png")), "-o",
                                      str(out), "--model", str(model_dir)],
                                env={"IMAGELOOP_DATA_DIR": str(data_dir)})
    assert result.exit_code == 0, result.output
    request = read_png_parameters(out.read_bytes())
    assert (request.scheduler, request.clip_skip, request.hires_scale, request.hires_steps) == (
        "DPM++ SDE Karras", 2, 1.5, 2)
    assert request.prompt == "a lighthouse on a cliff at dusk" and request.negative_prompt == "easynegative, lowres"
    assert request.loras[0].file == "add_detail" and request.loras[0].weight == 0.6
    assert Image.open(out).size == (96, 96)
    warnings = [line for line in result.output.splitlines() if line.startswith("warning: not honoured:")]
    assert len(warnings) == 3, result.output
    assert any("Hires upscaler: Latent" in line for line in warnings)
    assert any("TI hashes: badhandv4" in line for line in warnings)
    assert any("Model: deliberate_v2" in line and "tiny" in line for line in warnings)


def test_from_text_on_stdin_and_options_override(model_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    text = FORGE_TEXT.replace("Sampler: DPM++ SDE, Schedule type: Karras", "Sampler: Restart, Schedule type: Karras")
    result = CliRunner().invoke(app, ["generate", "--from-text", "-", "-o", str(out), "--model", str(model_dir),
                                      "--seed", "7", "--clip-skip", "1"],
                                env={"IMAGELOOP_DATA_DIR": str(data_dir)}, input=text)
    assert result.exit_code == 0, result.output
    request = read_png_parameters(out.read_bytes())
    assert (request.seed, request.clip_skip, request.scheduler) == (7, 1, "Euler")  # Restart: the model's default
    assert "warning: not honoured: Sampler: Restart" in result.output


def test_missing_lora_fails_naming_it(model_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    text = FORGE_TEXT.replace("add_detail:0.6", "detail_tweaker:0.6")
    result = CliRunner().invoke(app, ["generate", "--from-png", str(forge_png(tmp_path / "f.png", text)), "-o",
                                      str(tmp_path / "o.png"), "--model", str(model_dir)],
                                env={"IMAGELOOP_DATA_DIR": str(data_dir)})
    assert isinstance(result.exception, InvalidRequestError)
    assert result.exception.field == "lora" and "detail_tweaker" in str(result.exception)
    assert not (tmp_path / "o.png").exists()


def test_clip_skip_on_sdxl_is_reported(tmp_path: Path) -> None:
    model = tiny.save_sdxl(tmp_path / "xl", model_defaults={"steps": 1, "scheduler": "Euler", "width": 64,
                                                            "height": 64})
    result = CliRunner().invoke(app, ["generate", "a cat", "--clip-skip", "2", "-o", str(tmp_path / "o.png"),
                                      "--model", str(model)], env={"IMAGELOOP_DATA_DIR": str(tmp_path / "data")})
    assert result.exit_code == 0, result.output
    assert "warning: not honoured: Clip skip: 2" in result.output
