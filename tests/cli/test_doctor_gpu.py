"""``imageloop doctor`` on the device: CUDA with VRAM total/free, or 'no CUDA device'; ``--vram`` for the model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import imageloop.cli.commands  # noqa: F401  (registers every command on `app`)
from imageloop.cli import app
from imageloop.cli.doctor import diagnose
from imageloop.config import Settings
from imageloop.engine import acceleration


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the report of a machine without CUDA")
def test_without_cuda_the_report_says_so(tmp_path: Path) -> None:
    device = next(f for f in diagnose(Settings(data_dir=tmp_path)) if f.topic == "device")
    assert device.detail.startswith("no CUDA device: CPU only")
    result = CliRunner().invoke(app, ["doctor", "--vram"], env={"IMAGELOOP_DATA_DIR": str(tmp_path),
                                                                "COLUMNS": "300"})
    assert "model vram" in result.output and "no CUDA device: nothing to measure" in result.output, result.output


def test_with_cuda_the_report_gives_vram_total_and_free(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(acceleration, "cuda_memory", lambda: ("NVIDIA H100 80GB HBM3", 80 * 2**30, 79 * 2**30))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    device = next(f for f in diagnose(Settings(data_dir=tmp_path)) if f.topic == "device")
    assert device.status == "ok"
    assert device.detail == "CUDA: NVIDIA H100 80GB HBM3 (fp16); 1 GPU(s); VRAM 80.0 GiB total, 79.0 GiB free"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: measures a loaded model's VRAM")
def test_vram_of_the_loaded_model_on_cuda(tmp_path: Path) -> None:
    from tests import tiny

    model = tiny.save_sd15(tmp_path / "models" / "tiny15")
    result = CliRunner().invoke(app, ["doctor", "--vram"], env={"IMAGELOOP_DATA_DIR": str(tmp_path),
                                                                "IMAGELOOP_ENGINE__MODEL": str(model),
                                                                "COLUMNS": "300"})
    assert "model vram" in result.output and "on the GPU" in result.output, result.output
