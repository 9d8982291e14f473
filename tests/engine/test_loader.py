"""Loading diffusers folders and original-layout single files; clear errors for bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from imageloop.config import Settings
from imageloop.engine import loader, model_files
from imageloop.engine.loader import Mode, load_model, pipeline_variant
from imageloop.engine.model_files import Architecture
from imageloop.errors import ModelLoadError, UnsupportedModelError
from tests import tiny
from tests.engine.ldm_layout import pipeline_to_ldm, save_single_file

DEFAULTS = {"steps": 4, "guidance_scale": 3.5, "width": 128, "height": 64, "scheduler": "ddim",
            "prompt_weighting": "context"}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    sd15 = tiny.sd15_pipeline(seed=1)
    sdxl = tiny.sdxl_pipeline(seed=2, text_hidden_2=tiny.SDXL_SINGLE_FILE_HIDDEN_2)
    sd15.save_pretrained(root / "sd15")
    (root / "sd15" / "imageloop.json").write_text(json.dumps(DEFAULTS))
    sdxl.save_pretrained(root / "sdxl")
    save_single_file(sd15, root / "sd15.safetensors")
    save_single_file(sdxl, root / "sdxl.safetensors")
    return {"root": root, "sd15": root / "sd15", "sdxl": root / "sdxl",
            "sd15_file": root / "sd15.safetensors", "sdxl_file": root / "sdxl.safetensors"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", engine={"device": "cpu"})


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_folder_loads_with_its_defaults(models: dict[str, Path], settings: Settings) -> None:
    model = load_model(models["sd15"], settings)
    assert model.architecture is Architecture.SD15 and model.name == "sd15"
    assert type(model.pipe).__name__ == "StableDiffusionPipeline"
    d = model.defaults
    assert (d.steps, d.guidance_scale, d.width, d.height, d.scheduler) == (4, 3.5, 128, 64, "DDIM")
    assert d.prompt_weighting == "context"
    assert len(model.version) == 64 and model.short_hash == model.version[:10]


def test_defaults_fall_back_to_native_size_and_a1111_values(models: dict[str, Path], settings: Settings) -> None:
    d = load_model(models["sdxl"], settings).defaults
    assert (d.width, d.height) == (tiny.TINY_SIZE, tiny.TINY_SIZE)  # UNet sample size x VAE scale factor
    assert (d.steps, d.guidance_scale, d.scheduler) == (loader.FALLBACK_STEPS, loader.FALLBACK_GUIDANCE,
                                                        loader.FALLBACK_SCHEDULER)
    assert d.prompt_weighting == "a1111"


def test_name_under_models_dir(models: dict[str, Path], settings: Settings) -> None:
    settings.models_dir.mkdir(parents=True)
    (settings.models_dir / "mine").symlink_to(models["sd15"], target_is_directory=True)
    assert load_model("mine", settings).architecture is Architecture.SD15


@pytest.mark.parametrize("kind", ["sd15", "sdxl"])
def test_single_file_loads_the_same_weights(models: dict[str, Path], settings: Settings, kind: str) -> None:
    original = load_model(models[kind], settings).pipe
    model = load_model(models[f"{kind}_file"], settings, config=models[kind])
    assert model.architecture is Architecture(kind) and model.name == kind
    names = ["unet", "vae", "text_encoder"] + (["text_encoder_2"] if kind == "sdxl" else [])
    for name in names:
        assert same_weights(getattr(model.pipe, name), getattr(original, name)), name


def test_single_file_generates_like_the_folder(models: dict[str, Path], settings: Settings) -> None:
    pipes = [load_model(models["sd15"], settings).pipe,
             load_model(models["sd15_file"], settings, config=models["sd15"]).pipe]
    images = [p("a cat", num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0)).images
              for p in pipes]
    assert (images[0] == images[1]).all()


def test_version_is_a_content_hash(models: dict[str, Path], tmp_path: Path) -> None:
    first = model_files.content_hash(models["sd15_file"])
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(models["sd15_file"].read_bytes())
    assert model_files.content_hash(copy) == first
    data = bytearray(copy.read_bytes())
    data[-1] ^= 1
    copy.write_bytes(bytes(data))
    assert model_files.content_hash(copy) != first


def test_variants_share_the_base_weights(models: dict[str, Path], settings: Settings) -> None:
    model = load_model(models["sd15"], settings)
    img2img = pipeline_variant(model, Mode.IMG2IMG)
    assert type(img2img).__name__ == "StableDiffusionImg2ImgPipeline"
    assert img2img.unet is model.pipe.unet and img2img.text_encoder is model.pipe.text_encoder
    assert pipeline_variant(model, Mode.IMG2IMG) is img2img
    controlnet = tiny.make_controlnet()
    both = pipeline_variant(model, Mode.CONTROLNET_IMG2IMG, controlnet)
    assert type(both).__name__ == "StableDiffusionControlNetImg2ImgPipeline" and both.controlnet is controlnet
    with pytest.raises(ModelLoadError, match="ControlNet"):
        pipeline_variant(model, Mode.CONTROLNET)


def test_sdxl_variants(models: dict[str, Path], settings: Settings) -> None:
    model = load_model(models["sdxl"], settings)
    assert type(pipeline_variant(model, Mode.IMG2IMG)).__name__ == "StableDiffusionXLImg2ImgPipeline"


# -- errors ----------------------------------------------------------------------------------------------------------


def load_error(path: Path, settings: Settings, **kwargs: object) -> ModelLoadError:
    with pytest.raises(ModelLoadError) as info:
        load_model(path, settings, **kwargs)  # type: ignore[arg-type]
    assert str(path) in info.value.message or "embedded" in info.value.message
    return info.value


def test_missing_path(settings: Settings, tmp_path: Path) -> None:
    assert "does not exist" in load_error(tmp_path / "nope", settings).message


def test_empty_file(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "empty.safetensors").write_bytes(b"")
    assert "empty" in load_error(tmp_path / "empty.safetensors", settings).message


def test_not_safetensors(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "junk.safetensors").write_bytes(b"this is not a safetensors file at all" * 10)
    assert "not a readable .safetensors" in load_error(tmp_path / "junk.safetensors", settings).message


def test_pickle_checkpoint_is_refused(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "model.ckpt").write_bytes(b"PK\x03\x04")
    error = load_error(tmp_path / "model.ckpt", settings)
    assert isinstance(error, UnsupportedModelError) and "convert it to .safetensors" in error.message


def test_truncated_checkpoint(models: dict[str, Path], settings: Settings, tmp_path: Path) -> None:
    data = models["sd15_file"].read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    load_error(tmp_path / "cut.safetensors", settings, config=models["sd15"])


def test_corrupt_header(models: dict[str, Path], settings: Settings, tmp_path: Path) -> None:
    data = bytearray(models["sd15_file"].read_bytes())
    data[8:40] = b"\xff" * 32  # garbage inside the JSON header
    (tmp_path / "bad.safetensors").write_bytes(bytes(data))
    assert "not a readable" in load_error(tmp_path / "bad.safetensors", settings).message


@pytest.mark.parametrize(
    ("keys", "says"),
    [
        (["weights.0", "bias.0"], "not a Stable Diffusion checkpoint"),
        (["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"], "LoRA"),
        (["cond_stage_model.model.token_embedding.weight", "model.diffusion_model.input_blocks.0.0.weight"], "2.x"),
        (["encoder.down.0.block.0.conv1.weight", "decoder.up.0.block.0.conv1.weight"], "VAE"),
        (["model.diffusion_model.input_blocks.0.0.weight"], "without the SD1.5/SDXL text encoders"),
    ],
)
def test_unrelated_keys_are_unsupported(settings: Settings, tmp_path: Path, keys: list[str], says: str) -> None:
    path = tmp_path / "other.safetensors"
    save_file({key: torch.zeros(2) for key in keys}, str(path))
    error = load_error(path, settings)
    assert isinstance(error, UnsupportedModelError) and says in error.message


def test_single_file_needs_a_config_folder(models: dict[str, Path], settings: Settings, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_files, "SHIPPED_CONFIGS_DIR", tmp_path / "no-configs")
    assert "--config" in load_error(models["sd15_file"], settings).message
    error = load_error(models["sd15_file"], settings, config=models["sdxl"])
    assert "sd15" in error.message and "sdxl" in error.message


def test_checkpoint_missing_tensors(models: dict[str, Path], settings: Settings, tmp_path: Path) -> None:
    state = pipeline_to_ldm(tiny.sd15_pipeline())
    state = {k: v.contiguous() for k, v in state.items() if ".out.2." not in k and not k.endswith("out.2.weight")}
    path = tmp_path / "partial.safetensors"
    save_file(state, str(path))
    assert "no weights for" in load_error(path, settings, config=models["sd15"]).message
    # a text encoder tensor missing: diffusers loads the rest, our check names the component
    state = {k: v for k, v in pipeline_to_ldm(tiny.sd15_pipeline()).items() if "final_layer_norm.weight" not in k}
    save_file(state, str(path))
    assert "text_encoder" in load_error(path, settings, config=models["sd15"]).message


def test_folder_problems(models: dict[str, Path], settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "empty-dir").mkdir()
    assert "model_index.json" in load_error(tmp_path / "empty-dir", settings).message
    (tmp_path / "kandinsky").mkdir()
    (tmp_path / "kandinsky" / "model_index.json").write_text('{"_class_name": "KandinskyPipeline"}')
    assert isinstance(load_error(tmp_path / "kandinsky", settings), UnsupportedModelError)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model_index.json").write_text("{not json")
    assert "not valid JSON" in load_error(tmp_path / "broken", settings).message


def test_folder_with_missing_weights(models: dict[str, Path], settings: Settings, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(models["sd15"], tmp_path / "m")
    for weights in (tmp_path / "m" / "unet").glob("*.safetensors"):
        weights.unlink()
    assert "cannot load" in load_error(tmp_path / "m", settings).message


def test_bad_model_defaults(models: dict[str, Path], settings: Settings, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(models["sd15"], tmp_path / "m")
    (tmp_path / "m" / "imageloop.json").write_text('{"steps": 0}')
    assert "steps" in load_error(tmp_path / "m", settings).message
    (tmp_path / "m" / "imageloop.json").write_text('{"scheduler": "Warp drive"}')
    assert "Warp drive" in load_error(tmp_path / "m", settings).message
    (tmp_path / "m" / "imageloop.json").write_text('{"prompt_weighting": "loud"}')
    assert "prompt_weighting" in load_error(tmp_path / "m", settings).message


def test_embedded_model_missing_is_explained(settings: Settings, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("embedded", "embedded-lcm"):
        monkeypatch.setitem(model_files.EMBEDDED_MODELS, name, tmp_path / name)
        with pytest.raises(ModelLoadError, match=f"the {name} model is not installed"):
            load_model(name, settings)


def test_auto_device_is_cpu_fp32_without_cuda(tmp_path: Path) -> None:
    device, dtype = loader.resolve_device(Settings(data_dir=tmp_path))
    if not torch.cuda.is_available():
        assert (device.type, dtype) == ("cpu", torch.float32)
    else:
        assert (device.type, dtype) == ("cuda", torch.float16)


# -- shipped single-file configs ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> dict[Architecture, Path]:
    from imageloop.engine.single_file import prepared_config_dir

    root = tmp_path_factory.mktemp("configs")
    return {arch: prepared_config_dir(model_files.shipped_config_dir(arch), root) for arch in SHIPPED}


# FLUX.1 / SD3 single files take the user's own config folder: their text encoders are not shipped.
SHIPPED = (Architecture.SD15, Architecture.SDXL)


@pytest.mark.parametrize("arch", SHIPPED)
def test_shipped_tokenizers_are_clip(shipped: dict[Architecture, Path], arch: Architecture) -> None:
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(shipped[arch] / "tokenizer")
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]  # CLIP's own ids
    assert len(tokenizer) == 49408 and tokenizer.model_max_length == 77
    assert model_files.detect_architecture(shipped[arch]) is arch
    if arch is Architecture.SDXL:
        assert CLIPTokenizer.from_pretrained(shipped[arch] / "tokenizer_2").pad_token == "!"


def test_shipped_configs_have_the_real_sizes(shipped: dict[Architecture, Path]) -> None:
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    with torch.device("meta"):  # shapes only, no memory
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(shipped[Architecture.SD15] / "unet"))
        big_g = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(shipped[Architecture.SDXL] /
                                                                           "text_encoder_2"))
    assert sum(p.numel() for p in unet.parameters()) == 859_520_964  # SD1.5's UNet
    assert sum(p.numel() for p in big_g.parameters()) == 694_659_840  # SDXL's OpenCLIP bigG text encoder


def test_prepared_config_is_reused(shipped: dict[Architecture, Path]) -> None:
    from imageloop.engine.single_file import prepared_config_dir

    again = prepared_config_dir(model_files.shipped_config_dir(Architecture.SD15), shipped[Architecture.SD15].parent)
    assert again == shipped[Architecture.SD15]


def test_tiny_file_with_the_shipped_full_size_config_fails_clearly(models: dict[str, Path],
                                                                  settings: Settings) -> None:
    error = load_error(models["sd15_file"], settings)  # no --config: the shipped SD1.5 shapes do not fit
    assert "cannot load the sd15 model" in error.message


def test_the_torchvision_fallback_notice_is_dropped_and_other_transformers_messages_are_not() -> None:
    import logging

    assert loader.FALLBACK_STEPS  # importing the loader installs the filter
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logger = logging.getLogger("transformers.utils.import_utils")
    handler = Collect()
    logger.addHandler(handler)
    try:
        logger.warning("`CLIPImageProcessor` requires torchvision (not installed); falling back to "
                       "`CLIPImageProcessorPil` for backward compatibility.")
        logger.warning("some other transformers warning")
    finally:
        logger.removeHandler(handler)
    assert seen == ["some other transformers warning"]
