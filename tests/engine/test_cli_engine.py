"""``imageloop generate``, ``imageloop doctor`` and ``imageloop bench engine`` on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import imageloop.cli.commands  # noqa: F401  (registers every command on `app`)
from imageloop.bench.engine import (
    EngineBenchConfig,
    count_unet_flops,
    measure_matmul_flops,
    run_engine_bench,
    run_gpu_engine_bench,
)
from imageloop.cli import app
from imageloop.cli.doctor import diagnose
from imageloop.cli.generate import output_paths, parse_size
from imageloop.config import Settings
from imageloop.engine import read_png_parameters
from imageloop.errors import InvalidRequestError, ModelLoadError
from tests import tiny


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.save_sd15(tmp_path_factory.mktemp("cli") / "tiny", model_defaults={"steps": 2, "scheduler": "Euler"})


def test_generate_writes_pngs_with_parameters(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cat.png"
    result = CliRunner().invoke(app, [
        "generate", "a cat in the rain, monochrome", "-o", str(out), "--seed", "1", "--negative", "blurry",
        "--steps", "3", "--cfg", "6", "--size", "64x72", "--scheduler", "euler a", "--model", str(model_dir),
        "-n", "2"], env={"IMAGELOOP_DATA_DIR": str(tmp_path / "data")})
    assert result.exit_code == 0, result.output
    paths = [tmp_path / "cat-0.png", tmp_path / "cat-1.png"]
    assert all(path.exists() for path in paths)
    request = read_png_parameters(paths[1].read_bytes())
    assert (request.prompt, request.negative_prompt, request.seed, request.steps) == (
        "a cat in the rain, monochrome", "blurry", 2, 3)
    assert (request.guidance_scale, request.width, request.height, request.scheduler) == (6.0, 64, 72, "Euler a")
    assert "seed 2" in result.output


def test_generate_from_png_reproduces_and_overrides(model_dir: Path, tmp_path: Path) -> None:
    env = {"IMAGELOOP_DATA_DIR": str(tmp_path / "data"), "IMAGELOOP_ENGINE__RESULT_CACHE_SIZE": "0"}
    runner = CliRunner()
    first = tmp_path / "first.png"
    assert runner.invoke(app, ["generate", "a red bird", "-o", str(first), "--model", str(model_dir), "--seed", "5",
                               "--negative", "ugly"], env=env).exit_code == 0
    again = tmp_path / "again.png"
    result = runner.invoke(app, ["generate", "--from-png", str(first), "-o", str(again), "--model", str(model_dir)],
                           env=env)
    assert result.exit_code == 0, result.output
    assert again.read_bytes() == first.read_bytes()  # same parameters, same bytes
    other = tmp_path / "other.png"
    assert runner.invoke(app, ["generate", "--from-png", str(first), "-o", str(other), "--model", str(model_dir),
                               "--seed", "6"], env=env).exit_code == 0
    request = read_png_parameters(other.read_bytes())
    assert (request.prompt, request.negative_prompt, request.seed) == ("a red bird", "ugly", 6)
    nothing = runner.invoke(app, ["generate", "--model", str(model_dir)], env=env)
    assert isinstance(nothing.exception, InvalidRequestError) and nothing.exception.field == "prompt"


def test_generate_img2img_from_files(model_dir: Path, tmp_path: Path) -> None:
    env = {"IMAGELOOP_DATA_DIR": str(tmp_path / "data")}
    runner = CliRunner()
    assert runner.invoke(app, ["generate", "x", "-o", str(tmp_path / "a.png"), "--model", str(model_dir),
                               "--seed", "1"], env=env).exit_code == 0
    result = runner.invoke(app, ["generate", "x", "-o", str(tmp_path / "b.png"), "--model", str(model_dir),
                                 "--init-image", str(tmp_path / "a.png"), "--strength", "0.5"], env=env)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "b.png").read_bytes() != (tmp_path / "a.png").read_bytes()


def test_generate_errors_are_named(model_dir: Path, tmp_path: Path) -> None:
    env = {"IMAGELOOP_DATA_DIR": str(tmp_path / "data")}
    runner = CliRunner()
    bad_size = runner.invoke(app, ["generate", "x", "--size", "big", "--model", str(model_dir)], env=env)
    assert isinstance(bad_size.exception, InvalidRequestError) and bad_size.exception.field == "--size"
    missing = runner.invoke(app, ["generate", "x", "--init-image", str(tmp_path / "nope.png")], env=env)
    assert isinstance(missing.exception, InvalidRequestError) and missing.exception.field == "--init-image"
    no_model = runner.invoke(app, ["generate", "x", "--model", str(tmp_path / "nope")], env=env)
    assert isinstance(no_model.exception, ModelLoadError)


def test_size_and_output_names() -> None:
    assert parse_size("512x768") == (512, 768) and parse_size(" 64 X 64 ") == (64, 64)
    assert output_paths(Path("o/cat.png"), 1) == [Path("o/cat.png")]
    assert output_paths(Path("o/cat.png"), 2) == [Path("o/cat-0.png"), Path("o/cat-1.png")]


def test_doctor_reports_missing_model_and_fix(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, engine={"model": str(tmp_path / "absent")})
    findings = {f.topic: f for f in diagnose(settings)}
    assert findings["serving model"].status == "missing" and "IMAGELOOP_ENGINE__MODEL" in findings["serving model"].fix
    assert findings["device"].status in {"ok", "warn"}
    if "CPU only" in findings["device"].detail:
        assert findings["cpu autocast"].detail.startswith("auto: denoising in ")
    result = CliRunner().invoke(app, ["doctor"], env={"IMAGELOOP_DATA_DIR": str(tmp_path),
                                                     "IMAGELOOP_ENGINE__MODEL": str(tmp_path / "absent")})
    assert result.exit_code == 1 and "serving model" in result.output


def test_doctor_lists_models_and_passes(model_dir: Path, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, engine={"model": str(model_dir)})
    settings.models_dir.mkdir(parents=True)
    (settings.models_dir / "broken.safetensors").write_bytes(b"")
    findings = {f.topic: f for f in diagnose(settings)}
    assert findings["serving model"].status == "ok" and "sd15" in findings["serving model"].detail
    assert findings["model broken.safetensors"].status == "warn"
    assert "empty" in findings["model broken.safetensors"].detail


def test_bench_engine_result(model_dir: Path, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, engine={"device": "cpu"})
    result = run_engine_bench(settings, EngineBenchConfig(model=str(model_dir), steps=2, batch=2, repeats=1))
    assert result["settings"]["steps"] == 2 and result["settings"]["batch"] == 2
    assert len(result["diffusers"]["seconds"]) == len(result["engine"]["seconds"]) == 1
    assert result["engine_vs_diffusers"] > 0
    unet = result["unet"]
    assert unet["unet_calls_counted"] == 2 and unet["flops_per_step"] > 1e6
    assert unet["ideal_denoise_s"] == pytest.approx(2 * unet["flops_per_step"] / unet["matmul_flops_per_s"])
    json.dumps(result)  # JSON-ready


def test_unet_flops_counter_counts_cfg_batch() -> None:
    import torch

    unet = tiny.make_sd15_unet()
    counts: list[int] = []
    with count_unet_flops(unet, counts), torch.no_grad():
        for batch in (1, 2):
            unet(torch.zeros(batch, 4, 16, 16), 1, encoder_hidden_states=torch.zeros(batch, 77, tiny.TEXT_HIDDEN))
    assert counts[1] == pytest.approx(2 * counts[0], rel=0.01)
    assert "forward" not in vars(unet)  # the wrapper is gone
    assert measure_matmul_flops(torch.device("cpu"), torch.float32, size=256, repeats=1) > 1e6


def test_bench_cli_writes_json(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench" / "engine.json"
    result = CliRunner().invoke(app, ["bench", "engine", "--model", str(model_dir), "--steps", "1", "--repeats", "1",
                                      "--out", str(out)], env={"IMAGELOOP_DATA_DIR": str(tmp_path / "data")})
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["benchmark"] == "engine"
    assert "imageloop engine" in result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the report of a machine without CUDA")
def test_bench_cli_says_no_gpu_and_writes_no_gpu_result(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench" / "engine.json"
    result = CliRunner().invoke(app, ["bench", "engine", "--model", str(model_dir), "--steps", "1", "--repeats", "1",
                                      "--out", str(out)], env={"IMAGELOOP_DATA_DIR": str(tmp_path / "data"),
                                                               "COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "no GPU" in result.output and not (tmp_path / "bench" / "engine-gpu.json").exists()
    assert json.loads(out.read_text())["benchmark"] == "engine"
    assert run_gpu_engine_bench(Settings(data_dir=tmp_path), EngineBenchConfig(model=str(model_dir))) is None


def test_bench_cli_writes_the_gpu_result_to_its_own_json(model_dir: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import imageloop.bench.engine as bench_engine

    measure = bench_engine.run_engine_bench
    devices: list[str] = []

    def run(settings: Settings, bench: EngineBenchConfig, progress: object = None) -> dict[str, object]:
        # On a CUDA machine the second run is on the GPU; here it is measured on the CPU and marked.
        devices.append(settings.engine.device)
        on_cpu = Settings(data_dir=settings.data_dir, engine={"device": "cpu"})
        return {**measure(on_cpu, bench), "gpu_marker": settings.engine.device == "cuda"}

    monkeypatch.setattr(bench_engine, "run_engine_bench", run)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    out, gpu_out = tmp_path / "engine.json", tmp_path / "gpu" / "engine-h100.json"
    result = CliRunner().invoke(app, ["bench", "engine", "--model", str(model_dir), "--steps", "1", "--repeats", "1",
                                      "--out", str(out), "--gpu-out", str(gpu_out)],
                                env={"IMAGELOOP_DATA_DIR": str(tmp_path / "data"), "IMAGELOOP_ENGINE__DEVICE": "cpu",
                                     "COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    gpu = json.loads(gpu_out.read_text())
    assert gpu["gpu_marker"] and gpu["engine_vs_diffusers"] > 0 and "load_average_start" in gpu["machine"]
    assert gpu["machine"]["acceleration"]["attention"] == "AttnProcessor2_0"
    assert not json.loads(out.read_text())["gpu_marker"] and devices == ["cpu", "cuda"]
