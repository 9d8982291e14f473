"""IP-Adapter through the public engine: a reference image steers SD1.5 and SDXL, with recipes and ControlNet."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imageloop.config import Settings
from imageloop.engine import Engine, GenerationRequest, read_png_image_parameters
from imageloop.engine.pngmeta import png_parameters_text
from imageloop.errors import InvalidRequestError, ModelLoadError
from tests import tiny
from tests.engine.tiny_ip_adapters import save_image_encoder, save_ip_adapter

DEFAULTS = {"steps": 2, "guidance_scale": 5.0, "scheduler": "Euler", "width": 64, "height": 64}


def png_of(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", (64, 64), color)
    image.paste((255 - color[0], color[1], 255 - color[2]), (0, 0, 32, 32))
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ip-models")
    return {"sd15": tiny.save_sd15(root / "sd15", model_defaults=DEFAULTS),
            "sdxl": tiny.save_sdxl(root / "sdxl", model_defaults=DEFAULTS),
            "controlnet": tiny.save_controlnet(root / "controlnet")}


def settings_with_adapters(data: Path, **engine: object) -> Settings:
    library = data / "ip-adapters"
    save_ip_adapter(library / "tiny-sd15.safetensors", tiny.make_sd15_unet())
    save_image_encoder(library / "image_encoder")
    # The SDXL adapter in its own folder with its encoder beside it, as the published SDXL adapters are.
    save_ip_adapter(library / "sdxl" / "tiny-sdxl.safetensors", tiny.make_sdxl_unet())
    save_image_encoder(library / "sdxl" / "image_encoder", seed=1)
    return Settings(data_dir=data, engine={"device": "cpu", "result_cache_size": 0, **engine})


@pytest.fixture(scope="module")
def engine(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Engine:
    settings = settings_with_adapters(tmp_path_factory.mktemp("data"), ip_adapter="tiny-sd15")
    return Engine(settings, model=models["sd15"], controlnet=models["controlnet"])


def test_reference_image_steers_and_scale_zero_is_plain(engine: Engine) -> None:
    plain = GenerationRequest(prompt="a red cat", seed=3)
    before = engine.generate(plain).images[0].png
    red = engine.generate(plain.model_copy(update={"ip_image": png_of((200, 30, 30))}))
    blue = engine.generate(plain.model_copy(update={"ip_image": png_of((20, 40, 220))})).images[0].png
    assert red.images[0].png != before and blue != red.images[0].png
    assert red.request.ip_scale == 0.6  # the default, resolved and recorded
    zero = engine.generate(plain.model_copy(update={"ip_image": png_of((200, 30, 30)), "ip_scale": 0.0}))
    assert np.abs(pixels(zero.images[0].png) - pixels(before)).max() <= 1
    assert engine.generate(plain).images[0].png == before  # detached again: plain requests run as before


def test_png_text_and_resolved_request_carry_the_reference(engine: Engine) -> None:
    reference = png_of((10, 200, 10))
    result = engine.generate(GenerationRequest(prompt="a dog", seed=5, ip_image=reference, ip_scale=0.8))
    text = png_parameters_text(result.images[0].png)
    assert "IP-Adapter: tiny-sd15" in text and "IP-Adapter scale: 0.8" in text
    import hashlib

    assert f"IP-Adapter image: {hashlib.sha256(reference).hexdigest()[:10]}" in text
    stored = json.loads(result.request.canonical_json())
    assert stored["ip_scale"] == 0.8 and stored["ip_image"]
    assert GenerationRequest.model_validate_json(result.request.model_dump_json()).ip_image == reference
    back = read_png_image_parameters(result.images[0].png)
    assert back.request.ip_image is None and back.extras["IP-Adapter scale"] == "0.8"


def test_reference_with_a_recipe_and_controlnet(engine: Engine) -> None:
    from tests.engine.tiny_loras import make_diffusers_lora

    settings = engine.settings
    make_diffusers_lora(settings.loras_dir / "detail.safetensors")
    settings.recipes_dir.mkdir(parents=True, exist_ok=True)
    (settings.recipes_dir / "detailed.json").write_text(json.dumps(
        {"name": "detailed", "loras": [{"file": "detail", "weight": 0.8}]}))
    base = GenerationRequest(prompt="a house", seed=7, recipe="detailed", control_image=png_of((0, 0, 0)))
    without = engine.generate(base).images[0].png
    with_reference = engine.generate(base.model_copy(update={"ip_image": png_of((250, 250, 0))})).images[0].png
    assert with_reference != without
    no_recipe = engine.generate(base.model_copy(update={"recipe": None, "ip_image": png_of((250, 250, 0))}))
    assert no_recipe.images[0].png != with_reference


def test_generate_many_runs_a_reference_request_on_its_own(engine: Engine) -> None:
    reference = GenerationRequest(prompt="a bird", seed=9, ip_image=png_of((90, 90, 200)))
    plain = GenerationRequest(prompt="a bird", seed=9)
    many = engine.generate_many([reference, plain])
    assert many[0].images[0].png == engine.generate(reference).images[0].png
    assert many[1].images[0].png == engine.generate(plain).images[0].png != many[0].images[0].png


def test_hires_fix_keeps_the_reference(engine: Engine) -> None:
    request = GenerationRequest(prompt="a tree", seed=2, hires_scale=1.5, hires_steps=2,
                                ip_image=png_of((30, 30, 30)))
    result = engine.generate(request)
    assert (result.images[0].width, result.images[0].height) == (96, 96)


def test_sdxl_reference_image(models: dict[str, Path], tmp_path: Path) -> None:
    settings = settings_with_adapters(tmp_path, ip_adapter="sdxl/tiny-sdxl")
    engine = Engine(settings, model=models["sdxl"])
    plain = GenerationRequest(prompt="a castle", seed=4)
    before = engine.generate(plain).images[0].png
    steered = engine.generate(plain.model_copy(update={"ip_image": png_of((200, 100, 0))})).images[0].png
    assert steered != before


def test_missing_adapter_encoder_or_setting_are_named(models: dict[str, Path], tmp_path: Path) -> None:
    request = GenerationRequest(prompt="a cat", seed=1, ip_image=png_of((1, 2, 3)))
    unconfigured = Engine(Settings(data_dir=tmp_path / "a", engine={"device": "cpu"}), model=models["sd15"])
    with pytest.raises(InvalidRequestError, match="ip_image: no IP-Adapter is configured"):
        unconfigured.generate(request)
    missing = Engine(Settings(data_dir=tmp_path / "b", engine={"device": "cpu", "ip_adapter": "nope"}),
                     model=models["sd15"])
    with pytest.raises(ModelLoadError, match="IP-Adapter 'nope' not found"):
        missing.check(request)  # before any model work
    with pytest.raises(ModelLoadError, match="IP-Adapter 'nope' not found"):
        missing.generate(request)
    save_ip_adapter(tmp_path / "c" / "ip-adapters" / "lonely.safetensors", tiny.make_sd15_unet())
    no_encoder = Engine(Settings(data_dir=tmp_path / "c", engine={"device": "cpu", "ip_adapter": "lonely"}),
                        model=models["sd15"])
    with pytest.raises(ModelLoadError, match="image encoder"):
        no_encoder.generate(request)
    with pytest.raises(InvalidRequestError, match="ip_scale: only applies with an ip_image"):
        GenerationRequest(prompt="a cat", ip_scale=0.5)


def test_an_adapter_for_another_model_is_a_load_error(models: dict[str, Path], tmp_path: Path) -> None:
    settings = settings_with_adapters(tmp_path, ip_adapter="sdxl/tiny-sdxl")
    engine = Engine(settings, model=models["sd15"])
    plain = GenerationRequest(prompt="a cat", seed=1)
    before = engine.generate(plain).images[0].png
    with pytest.raises(ModelLoadError, match="does not fit the loaded model"):
        engine.generate(plain.model_copy(update={"ip_image": png_of((1, 2, 3))}))
    assert engine.generate(plain).images[0].png == before


def test_pasted_text_with_ip_adapter_fields_reports_them(tmp_path: Path) -> None:
    from imageloop.engine.infotext import import_parameters

    text = ("a dog\nSteps: 2, Sampler: Euler, CFG scale: 5, Seed: 1, Size: 64x64, IP-Adapter image: 0123456789, "
            "IP-Adapter scale: 0.8, IP-Adapter: tiny-sd15")
    imported = import_parameters(text, Settings(data_dir=tmp_path))
    reasons = {item.name: item.reason for item in imported.ignored}
    assert reasons["IP-Adapter scale"] == "the reference image is not part of the text"
    assert imported.request.ip_image is None and imported.request.seed == 1
