"""``imageloop doctor`` lists each model found: family (as the loader detects it), size on disk, parameters and the
memory their weights take at fp32/fp16, components, and what each add-on needs."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

import imageloop.cli.commands  # noqa: F401  (registers every command on `app`)
from imageloop.cli import app
from imageloop.cli.doctor import diagnose
from imageloop.config import Settings
from imageloop.engine.inventory import family_from_shapes, human_bytes, human_count, list_models
from tests import tiny
from tests.engine.tiny_ip_adapters import save_image_encoder


def _zeros(shapes: dict[str, tuple[int, ...]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: torch.zeros(shape) for key, shape in shapes.items()}, str(path))
    return path


def test_family_of_add_ons_from_their_shapes() -> None:
    assert family_from_shapes({"lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight":
                               (4, 768)}) == "sd15"
    assert family_from_shapes({"unet.down_blocks.1.attn2.to_k.lora_A.weight": (4, 2048)}) == "sdxl"
    assert family_from_shapes({"image_proj.norm.weight": (2048,), "ip_adapter.1.to_k_ip.weight": (640, 2048)}) \
        == "sdxl"
    assert family_from_shapes({"transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight": (4, 3072)}) \
        == "flux"
    assert family_from_shapes({"x.attn2.to_k.weight": (320, 32)}) == "unknown (context width 32)"
    assert human_bytes(3 * 1024**3) == "3 GB" and human_bytes(512) == "512 B"
    assert (human_count(2_567_000_000), human_count(14_900_000), human_count(27_400), human_count(12)) == (
        "2.57B", "14.9M", "27.4K", "12")


def test_doctor_lists_every_model_with_family_size_and_needs(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", engine={"ip_adapter": "style"})
    sd15 = tiny.save_sd15(settings.models_dir / "tiny15")
    tiny.save_sdxl(settings.models_dir / "tinyxl")
    (settings.models_dir / "broken.safetensors").write_bytes(b"")
    _zeros({"lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": (4, 768),
            "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight": (320, 4)},
           settings.loras_dir / "ink.safetensors")
    _zeros({"image_proj.norm.weight": (2048,), "image_proj.proj.weight": (8, 4),
            "ip_adapter.1.to_k_ip.weight": (640, 2048)}, settings.ip_adapters_dir / "style.safetensors")
    _zeros({"image_proj.norm.weight": (768,), "ip_adapter.1.to_k_ip.weight": (320, 768)},
           settings.ip_adapters_dir / "lonely" / "face.safetensors")
    save_image_encoder(settings.ip_adapters_dir / "image_encoder")

    entries = {entry.name: entry for entry in list_models(settings)}
    model = entries["tiny15"]
    assert (model.kind, model.family) == ("model", "sd15") and entries["tinyxl"].family == "sdxl"
    assert model.size_bytes == sum(p.stat().st_size for p in sd15.rglob("*") if p.is_file())
    assert "unet" in model.components and "vae" in model.components
    unet_parameters = sum(p.numel() for p in tiny.make_sd15_unet().parameters())
    assert model.parameters is not None and model.parameters > unet_parameters
    assert model.weights_bytes(4) == 2 * (model.weights_bytes(2) or 0) == model.parameters * 4
    assert entries["broken.safetensors"].problem is not None and "empty" in entries["broken.safetensors"].problem
    assert (entries["ink"].kind, entries["ink"].family) == ("lora", "sd15")
    assert "a sd15 base model" in entries["ink"].needs
    assert (entries["style"].kind, entries["style"].family) == ("ip-adapter", "sdxl")
    assert any(need.startswith("image encoder ") for need in entries["style"].needs)
    # The encoder in ip-adapters/ serves an adapter in a sub-folder too; its own weights are not listed.
    assert "model" not in entries and entries["face"].family == "sd15"

    findings = {finding.topic: finding for finding in diagnose(settings)}
    assert findings["model tiny15"].status == "ok" and "sd15" in findings["model tiny15"].detail
    assert "fp32" in findings["model tiny15"].detail and "fp16" in findings["model tiny15"].detail
    assert findings["model broken.safetensors"].status == "warn"
    assert findings["lora ink"].status == "ok" and findings["ip-adapter style"].status == "ok"
    assert findings["ip-adapter"].status == "ok" and findings["loaded models"].detail.startswith("at most 1")

    result = CliRunner().invoke(app, ["doctor"], env={"IMAGELOOP_DATA_DIR": str(settings.data_dir),
                                                     "IMAGELOOP_ENGINE__MODEL": str(sd15),
                                                     "COLUMNS": "300"})
    assert "tiny15" in result.output and "ip-adapter style" in result.output, result.output


def test_an_adapter_without_its_encoder_is_a_warning(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    _zeros({"image_proj.norm.weight": (768,), "ip_adapter.1.to_k_ip.weight": (320, 768)},
           settings.ip_adapters_dir / "plain.safetensors")
    findings = {finding.topic: finding for finding in diagnose(settings)}
    assert findings["ip-adapter plain"].status == "warn" and "MISSING" in findings["ip-adapter plain"].detail
    assert findings["ip-adapter"].status == "warn"  # none configured
