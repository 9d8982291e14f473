"""ControlNets from diffusers folders and single files (original A1111 layout or diffusers layout)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image
from safetensors.torch import save_file

from imageloop.config import Settings
from imageloop.engine import Engine, GenerationRequest
from imageloop.engine.controlnet import load_controlnet
from imageloop.errors import ModelLoadError, UnsupportedModelError
from tests import tiny
from tests.engine.ldm_layout import controlnet_to_ldm

STANDARD_HINT = (16, 32, 96, 256)  # the hint encoder of real ControlNets (8x down, like the VAE)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("controlnet")
    components = tiny.sd15_components()
    components["vae"] = tiny.make_vae(levels=4)  # scale factor 8, as in SD1.5
    pipe = StableDiffusionPipeline(**components)
    pipe.save_pretrained(root / "base")
    controlnet = tiny.make_controlnet(seed=3, unet=pipe.unet, embedding_channels=STANDARD_HINT)
    state = {k: v.contiguous() for k, v in controlnet.state_dict().items()}
    save_file(controlnet_to_ldm(state, controlnet.config), str(root / "control_scribble.safetensors"))
    save_file(state, str(root / "diffusers_layout.safetensors"))
    controlnet.save_pretrained(root / "folder")
    return {"root": root, "controlnet": controlnet, "unet_config": pipe.unet.config}


def load(path: Path, unet_config: object) -> torch.nn.Module:
    settings = Settings(data_dir=path.parent / "data")
    model, version = load_controlnet(path, settings, torch.device("cpu"), torch.float32, unet_config)  # type: ignore
    assert len(version) == 64
    return model  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", ["control_scribble.safetensors", "diffusers_layout.safetensors", "folder"])
def test_every_layout_loads_the_same_weights(files: dict[str, object], name: str) -> None:
    root = files["root"]
    assert isinstance(root, Path)
    loaded = load(root / name, files["unet_config"]).state_dict()
    expected = files["controlnet"].state_dict()  # type: ignore[attr-defined]
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)


def test_engine_uses_a_single_file_controlnet(files: dict[str, object], tmp_path: Path) -> None:
    root = files["root"]
    assert isinstance(root, Path)
    engine = Engine(Settings(data_dir=tmp_path, engine={"device": "cpu"}), model=root / "base",
                    controlnet=root / "control_scribble.safetensors")
    images = []
    for color in ((0, 0, 0), (255, 255, 255)):
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), color).save(buffer, format="PNG")
        result = engine.generate(GenerationRequest(prompt="a house", seed=1, steps=2, width=64, height=64,
                                                   control_image=buffer.getvalue()))
        images.append(result.images[0].png)
    assert images[0] != images[1]


def test_controlnet_for_another_base_model(files: dict[str, object]) -> None:
    root = files["root"]
    assert isinstance(root, Path)
    other_unet = tiny.make_sdxl_unet().config
    with pytest.raises(ModelLoadError, match="cannot load the ControlNet"):
        load(root / "control_scribble.safetensors", other_unet)


def test_files_that_are_not_controlnets(files: dict[str, object], tmp_path: Path) -> None:
    unet_config = files["unet_config"]
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 2)}, str(tmp_path / "lora.safetensors"))
    with pytest.raises(UnsupportedModelError, match="not a ControlNet"):
        load(tmp_path / "lora.safetensors", unet_config)
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="empty"):
        load(tmp_path / "empty.safetensors", unet_config)
    (tmp_path / "dir").mkdir()
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        load(tmp_path / "dir", unet_config)
    with pytest.raises(ModelLoadError, match="does not exist"):
        load(tmp_path / "missing.safetensors", unet_config)
