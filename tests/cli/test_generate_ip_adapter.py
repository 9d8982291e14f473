"""``imageloop generate --ip-image --ip-scale --ip-adapter``: a reference image from the command line."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

import imageloop.cli.commands  # noqa: F401  (registers every command on `app`)
from imageloop.cli import app
from imageloop.engine.pngmeta import png_parameters_text
from imageloop.errors import ModelLoadError
from tests import tiny
from tests.engine.tiny_ip_adapters import save_image_encoder, save_ip_adapter


def test_generate_with_a_reference_image(tmp_path: Path) -> None:
    model = tiny.save_sd15(tmp_path / "tiny", model_defaults={"steps": 2, "scheduler": "Euler"})
    data = tmp_path / "data"
    save_ip_adapter(data / "ip-adapters" / "tiny.safetensors", tiny.make_sd15_unet())
    save_image_encoder(data / "ip-adapters" / "image_encoder")
    reference = tmp_path / "reference.png"
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), (10, 120, 240)).save(buffer, format="PNG")
    reference.write_bytes(buffer.getvalue())
    env = {"IMAGELOOP_DATA_DIR": str(data), "IMAGELOOP_ENGINE__RESULT_CACHE_SIZE": "0"}
    runner = CliRunner()
    plain = tmp_path / "plain.png"
    common = ["generate", "a cat", "--model", str(model), "--seed", "1"]
    assert runner.invoke(app, [*common, "-o", str(plain)], env=env).exit_code == 0
    steered = tmp_path / "steered.png"
    result = runner.invoke(app, [*common, "-o", str(steered), "--ip-image", str(reference), "--ip-scale", "0.9",
                                 "--ip-adapter", "tiny"], env=env)
    assert result.exit_code == 0, result.output
    assert steered.read_bytes() != plain.read_bytes()
    text = png_parameters_text(steered.read_bytes())
    assert "IP-Adapter: tiny" in text and "IP-Adapter scale: 0.9" in text
    missing = runner.invoke(app, [*common, "-o", str(tmp_path / "x.png"), "--ip-image", str(reference),
                                  "--ip-adapter", "absent"], env=env)
    assert isinstance(missing.exception, ModelLoadError) and "IP-Adapter 'absent' not found" in str(missing.exception)
