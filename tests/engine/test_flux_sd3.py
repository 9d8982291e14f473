"""FLUX.1 and SD3 through the public loader and engine, on tiny random models built here (see flow_models)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from imageloop.config import Settings
from imageloop.engine.conditioning import PromptWeighting
from imageloop.engine.engine import Engine
from imageloop.engine.flow_conditioning import encode_flow_prompt
from imageloop.engine.infotext import import_parameters
from imageloop.engine.loader import load_model
from imageloop.engine.lora import inspect_lora_file
from imageloop.engine.model_files import Architecture, detect_architecture, native_size
from imageloop.engine.pngmeta import png_parameters_text
from imageloop.engine.progress import CancelToken
from imageloop.engine.recipes import LoraWeight
from imageloop.engine.request import GenerationRequest
from imageloop.engine.transformer_files import flux_original_to_diffusers
from imageloop.errors import GenerationCancelled, InvalidRequestError, ModelLoadError
from tests.engine import flow_models as fm
from tests.tiny import count_calls

SIZE = 64


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("flow-models")
    flux, sd3 = fm.flux_pipeline(), fm.sd3_pipeline()
    out = {
        "flux": fm.save_folder(flux, root / "flux"),
        "flux_schnell": fm.save_folder(fm.flux_pipeline(seed=1, guidance_embeds=False), root / "flux-schnell"),
        "sd3": fm.save_folder(sd3, root / "sd3"),
        "sd3_no_t5": fm.save_folder(fm.sd3_pipeline(with_t5=False), root / "sd3-no-t5"),
    }
    out["flux_bfl"] = fm.save_transformer_file(fm.flux_to_original(flux.transformer), root / "flux1-bfl.safetensors")
    out["flux_comfy"] = fm.save_transformer_file(
        fm.flux_to_original(flux.transformer, prefix="model.diffusion_model."), root / "flux1-comfy.safetensors")
    out["flux_diffusers"] = fm.save_transformer_file(flux.transformer.state_dict(), root / "flux1-diff.safetensors")
    out["sd3_sai"] = fm.save_transformer_file(fm.sd3_to_original(sd3.transformer), root / "sd3-sai.safetensors")
    out["sd3_diffusers"] = fm.save_transformer_file(sd3.transformer.state_dict(), root / "sd3-diff.safetensors")
    return out


def make_settings(root: Path, **engine: object) -> Settings:
    return Settings(data_dir=root, engine={"device": "cpu", "cpu_autocast": "off", **engine})


@pytest.fixture(scope="module")
def engines(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Engine]:
    settings = make_settings(tmp_path_factory.mktemp("data"))
    return {name: Engine(settings, model=models[name]) for name in ("flux", "flux_schnell", "sd3", "sd3_no_t5")}


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def run(engine: Engine, **fields: object) -> bytes:
    request = GenerationRequest(**{"prompt": "a red cat", "seed": 7, "steps": 2, "width": SIZE, "height": SIZE,
                                   **fields})
    return engine.generate(request).images[0].png


# -- detection and loading ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "family"), [
    ("flux", Architecture.FLUX), ("flux_schnell", Architecture.FLUX), ("sd3", Architecture.SD3),
    ("flux_bfl", Architecture.FLUX), ("flux_comfy", Architecture.FLUX), ("flux_diffusers", Architecture.FLUX),
    ("sd3_sai", Architecture.SD3), ("sd3_diffusers", Architecture.SD3),
])
def test_family_is_detected(models: dict[str, Path], name: str, family: Architecture) -> None:
    assert detect_architecture(models[name]) is family


@pytest.mark.parametrize(("file", "folder"), [
    ("flux_bfl", "flux"), ("flux_comfy", "flux"), ("flux_diffusers", "flux"),
    ("sd3_sai", "sd3"), ("sd3_diffusers", "sd3"),
])
def test_single_file_loads_the_folders_transformer(models: dict[str, Path], tmp_path: Path, file: str,
                                                   folder: str) -> None:
    settings = make_settings(tmp_path)
    loaded = load_model(models[file], settings, config=models[folder])
    reference = load_model(models[folder], settings)
    assert loaded.architecture is reference.architecture
    mine, theirs = loaded.pipe.transformer.state_dict(), reference.pipe.transformer.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[key], theirs[key]) for key in mine)


def test_bundled_components_are_named_in_a_warning(models: dict[str, Path], tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    pipe = fm.sd3_pipeline()
    state = fm.sd3_to_original(pipe.transformer)
    state.update({f"first_stage_model.{key}": value for key, value in pipe.vae.state_dict().items()})
    file = fm.save_transformer_file(state, tmp_path / "sd3-incl-vae.safetensors")
    with caplog.at_level("WARNING"):
        loaded = load_model(file, make_settings(tmp_path), config=models["sd3"])
    assert loaded.architecture is Architecture.SD3
    assert "first_stage_model" in caplog.text and "only its transformer is used" in caplog.text


def test_single_file_without_config_folder_says_what_it_needs(models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="--config") as caught:
        load_model(models["flux_bfl"], make_settings(tmp_path))
    assert "text encoders" in caught.value.message
    with pytest.raises(ModelLoadError, match="sd3"):
        load_model(models["sd3_sai"], make_settings(tmp_path), config=models["flux"])


def test_flux_key_conversion_matches_diffusers_at_the_released_width() -> None:
    # Fake tensors shaped like FLUX.1 at width 3072 (one column each): diffusers' converter is the reference.
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    tiny = fm.flux_to_original(fm.flux_pipeline().transformer)
    scale = 3072 // 32  # the tiny model's width is 32
    torch.manual_seed(0)
    fake = {key: torch.randn(value.shape[0] * scale, 1) for key, value in tiny.items()}
    expected = convert_flux_transformer_checkpoint_to_diffusers(dict(fake))
    ours = flux_original_to_diffusers(fake)
    assert ours.keys() == expected.keys()
    assert all(torch.equal(ours[key], expected[key]) for key in ours)


def test_a_model_default_sampler_of_another_family_is_a_load_error(models: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    folder = shutil.copytree(models["sd3"], tmp_path / "sd3")
    (folder / "imageloop.json").write_text('{"scheduler": "DPM++ 2M Karras"}', encoding="utf-8")
    with pytest.raises(ModelLoadError, match=r"imageloop\.json.*DPM"):
        load_model(folder, make_settings(tmp_path))


def test_family_defaults(engines: dict[str, Engine]) -> None:
    flux = engines["flux"].model.defaults
    assert (flux.steps, flux.guidance_scale, flux.scheduler) == (28, 3.5, "Euler")
    schnell = engines["flux_schnell"].model.defaults
    assert (schnell.steps, schnell.guidance_scale) == (4, 0.0)
    sd3 = engines["sd3"].model.defaults
    assert (sd3.steps, sd3.guidance_scale, sd3.width) == (28, 7.0, 64)
    resolved = engines["flux"].resolve(GenerationRequest(prompt="a cat", width=SIZE, height=SIZE))
    assert resolved.guidance_scale == 3.5 and resolved.scheduler == "Euler"


def test_native_size_is_read_from_the_configs(models: dict[str, Path], tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    assert native_size(models["flux"], settings) == 256  # FluxPipeline's 128 latents x the tiny VAE's 2
    assert native_size(models["sd3"], settings) == 64  # the transformer's sample_size 32 x 2


# -- generation -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["flux", "flux_schnell", "sd3", "sd3_no_t5"])
def test_generates_at_the_asked_size_and_seeds_repeat(models: dict[str, Path], tmp_path: Path, name: str) -> None:
    # Fresh engines without a result cache: equal bytes come from two real runs.
    first, second = (Engine(make_settings(tmp_path, result_cache_size=0), model=models[name]) for _ in range(2))
    png = run(first, width=SIZE, height=SIZE + 16)
    assert Image.open(io.BytesIO(png)).size == (SIZE, SIZE + 16)
    assert run(second, width=SIZE, height=SIZE + 16) == png
    assert not np.array_equal(pixels(run(first, seed=8, width=SIZE, height=SIZE + 16)), pixels(png))


@pytest.mark.parametrize("name", ["flux", "sd3"])
def test_img2img_and_hires_fix(engines: dict[str, Engine], name: str) -> None:
    source = io.BytesIO()
    Image.new("RGB", (SIZE, SIZE), (200, 30, 30)).save(source, format="PNG")
    png = run(engines[name], init_image=source.getvalue(), strength=0.5)
    assert Image.open(io.BytesIO(png)).size == (SIZE, SIZE)
    hires = run(engines[name], hires_scale=1.5, hires_steps=2)
    assert Image.open(io.BytesIO(hires)).size == (96, 96)


@pytest.mark.parametrize("name", ["flux", "sd3"])
def test_batched_requests_match_separate_runs_and_cancel_stops(models: dict[str, Path], tmp_path: Path,
                                                               name: str) -> None:
    engine = Engine(make_settings(tmp_path, result_cache_size=0), model=models[name])
    requests = [GenerationRequest(prompt=prompt, seed=3, steps=2, width=SIZE, height=SIZE)
                for prompt in ("a red cat", "a blue dog on the beach at night")]
    batched = engine.generate_many(requests)
    for request, result in zip(requests, batched, strict=True):
        alone = engine.generate(request).images[0].png
        assert np.abs(pixels(result.images[0].png) - pixels(alone)).max() <= 2
    with pytest.raises(GenerationCancelled):
        engine.generate(requests[0], on_step=lambda step, total: step < 1)
    # a stop asked for while a step runs takes effect before the transformer's next block
    token = CancelToken()
    transformer = engine.model.pipe.transformer
    blocks = [*transformer.transformer_blocks, *getattr(transformer, "single_transformer_blocks", [])]
    handle = blocks[0].register_forward_hook(lambda *_: token.cancel())
    try:
        with count_calls(blocks[-1].attn) as later_blocks, pytest.raises(GenerationCancelled):
            engine.generate(requests[1], cancel=token)
    finally:
        handle.remove()
    assert later_blocks[0] == 0


def test_flux_guidance_is_the_embedded_guidance(engines: dict[str, Engine]) -> None:
    engine = engines["flux"]
    assert not np.array_equal(pixels(run(engine, guidance_scale=1.0)), pixels(run(engine, guidance_scale=5.0)))
    text = png_parameters_text(run(engine, guidance_scale=5.0))
    assert "CFG scale: 5" in text and "Sampler: Euler" in text


def test_negative_prompt_on_flux_is_refused_by_name(engines: dict[str, Engine]) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        run(engines["flux"], negative_prompt="blurry")
    assert caught.value.field == "negative_prompt" and "FLUX.1" in caught.value.message


def test_style_negative_on_flux_is_reported_in_the_parameters(engines: dict[str, Engine]) -> None:
    text = png_parameters_text(run(engines["flux"], style="cinematic"))
    assert "Style negative prompt: not used (FLUX.1 has no negative prompt)" in text


def test_sd3_honours_the_negative_prompt(engines: dict[str, Engine]) -> None:
    engine = engines["sd3"]
    assert not np.array_equal(pixels(run(engine)), pixels(run(engine, negative_prompt="blurry dark")))


def test_schnell_takes_no_guidance(engines: dict[str, Engine]) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        run(engines["flux_schnell"], guidance_scale=3.5)
    assert caught.value.field == "guidance_scale"


@pytest.mark.parametrize("name", ["flux", "sd3"])
def test_a_sampler_of_another_family_is_refused_by_name(engines: dict[str, Engine], name: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        run(engines[name], scheduler="DPM++ 2M Karras")
    assert caught.value.field == "scheduler" and "'DPM++ 2M Karras'" in caught.value.message
    assert caught.value.allowed == "Euler"


@pytest.mark.parametrize(("field", "value"), [("clip_skip", 2), ("width", 104), ("height", 128)])
def test_what_the_family_cannot_take_is_named(engines: dict[str, Engine], field: str, value: int) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        run(engines["sd3"], **{field: value})
    assert caught.value.field == field


# -- prompt weights -------------------------------------------------------------------------------------------------

def test_unweighted_encoding_matches_diffusers(engines: dict[str, Engine]) -> None:
    flux = engines["flux"].model.pipe
    ours = encode_flow_prompt(flux, "flux", "a red cat on the beach")
    embeds, pooled, _ = flux.encode_prompt("a red cat on the beach", None, max_sequence_length=fm.T5_MAX_LENGTH)
    assert torch.allclose(ours.embeds, embeds, atol=1e-5) and ours.pooled is not None
    assert torch.allclose(ours.pooled, pooled, atol=1e-5)
    sd3 = engines["sd3"].model.pipe
    ours = encode_flow_prompt(sd3, "sd3", "a red cat on the beach")
    embeds, _, pooled, _ = sd3.encode_prompt("a red cat on the beach", None, None, do_classifier_free_guidance=False,
                                             max_sequence_length=fm.T5_MAX_LENGTH)
    assert torch.allclose(ours.embeds, embeds, atol=1e-5) and ours.pooled is not None
    assert torch.allclose(ours.pooled, pooled, atol=1e-5)


@pytest.mark.parametrize("weighting", ["a1111", "context"])
@pytest.mark.parametrize("name", ["flux", "sd3"])
def test_weights_act_on_t5_tokens(engines: dict[str, Engine], name: str, weighting: PromptWeighting) -> None:
    pipe = engines[name].model.pipe
    plain = encode_flow_prompt(pipe, name, "a red cat", weighting)
    assert torch.equal(encode_flow_prompt(pipe, name, "a red (cat:1)", weighting).embeds, plain.embeds)
    weighted = encode_flow_prompt(pipe, name, "a red (cat:1.5)", weighting)
    assert not torch.allclose(weighted.embeds, plain.embeds)
    if name == "flux":  # only T5 carries the sequence; the pooled CLIP vector stays unweighted
        assert weighted.pooled is not None and plain.pooled is not None
        assert torch.equal(weighted.pooled, plain.pooled)


# -- LoRA -------------------------------------------------------------------------------------------------------------

def _lora_pair(rows: int, cols: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(4, cols, generator=generator) * 0.5, torch.randn(rows, 4, generator=generator) * 0.5


def write_flux_loras(transformer: torch.nn.Module, folder: Path) -> None:
    """One FLUX.1 LoRA in diffusers (PEFT) keys and one in kohya keys, on the double block's projections."""
    folder.mkdir(parents=True, exist_ok=True)
    proj = transformer.transformer_blocks[0].attn.to_out[0]
    mlp = transformer.transformer_blocks[0].ff.net[2]
    down, up = _lora_pair(proj.out_features, proj.in_features, 1)
    down2, up2 = _lora_pair(mlp.out_features, mlp.in_features, 2)
    save_file({"transformer.transformer_blocks.0.attn.to_out.0.lora_A.weight": down,
               "transformer.transformer_blocks.0.attn.to_out.0.lora_B.weight": up,
               "transformer.transformer_blocks.0.ff.net.2.lora_A.weight": down2,
               "transformer.transformer_blocks.0.ff.net.2.lora_B.weight": up2},
              str(folder / "flux-diffusers.safetensors"))
    save_file({"lora_unet_double_blocks_0_img_attn_proj.lora_down.weight": down,
               "lora_unet_double_blocks_0_img_attn_proj.lora_up.weight": up,
               "lora_unet_double_blocks_0_img_attn_proj.alpha": torch.tensor(4.0),
               "lora_unet_double_blocks_0_img_mlp_2.lora_down.weight": down2,
               "lora_unet_double_blocks_0_img_mlp_2.lora_up.weight": up2,
               "lora_unet_double_blocks_0_img_mlp_2.alpha": torch.tensor(4.0)}, str(folder / "flux-kohya.safetensors"))


def test_flux_loras_in_diffusers_and_kohya_keys(models: dict[str, Path], tmp_path: Path) -> None:
    settings = make_settings(tmp_path, result_cache_size=0)
    engine = Engine(settings, model=models["flux"])
    write_flux_loras(engine.model.pipe.transformer, settings.loras_dir)
    plain = run(engine)
    diffusers_lora = run(engine, loras=(LoraWeight(file="flux-diffusers", weight=1.0),))
    kohya_lora = run(engine, loras=(LoraWeight(file="flux-kohya", weight=1.0),))
    assert not np.array_equal(pixels(diffusers_lora), pixels(plain))
    # the same matrices (alpha = rank, so scale 1) in either key format give the same image
    assert np.abs(pixels(kohya_lora) - pixels(diffusers_lora)).max() <= 1
    assert run(engine) == plain  # switched off again: nothing leaks into the base weights


def test_flux_loras_are_recognised_by_the_library(tmp_path: Path) -> None:
    write_flux_loras(fm.flux_pipeline().transformer, tmp_path)
    for name, base in (("flux-diffusers", "FLUX.1 or SD3"), ("flux-kohya", "FLUX.1")):
        info = inspect_lora_file(tmp_path / f"{name}.safetensors")
        assert (info.components, info.base, info.layers) == (("transformer",), base, 2)


# -- pasted parameters ----------------------------------------------------------------------------------------------

FORGE_FLUX_TEXT = (
    "a red cat on the beach\n"
    "Steps: 2, Sampler: Euler, Schedule type: Simple, CFG scale: 1, Distilled CFG Scale: 2.5, Seed: 7, Size: 64x64, "
    "Model hash: 6bb5f9b8b2, Model: flux1-dev-bnb-nf4-v2, Version: f2.0.1v1.10.1-previous-313-g8a042934, "
    "Module 1: ae, Module 2: clip_l, Module 3: t5xxl_fp16"
)
A1111_SD_TEXT = (
    "a red cat on the beach\n"
    "Negative prompt: blurry, lowres\n"
    "Steps: 2, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 7, Size: 64x64, Model hash: 6ce0161689, "
    "Model: v1-5-pruned-emaonly, Clip skip: 2, Version: v1.10.1"
)


def test_pasted_forge_flux_parameters_run_on_flux(engines: dict[str, Engine], tmp_path: Path) -> None:
    imported = import_parameters(FORGE_FLUX_TEXT, make_settings(tmp_path), family="flux")
    request = imported.request
    assert request.guidance_scale == 2.5  # Forge's Distilled CFG Scale is FLUX.1's guidance
    ignored = {item.name: item.reason for item in imported.ignored}
    assert "CFG scale" not in ignored  # 1 is what FLUX.1 runs anyway
    assert "Sampler" in ignored or "Schedule type" in ignored  # Euler + Simple schedule: the schedule is not ours
    result = engines["flux"].generate(request)
    assert result.request.guidance_scale == 2.5 and result.request.scheduler == "Euler"


def test_pasted_sd_parameters_on_flux_report_what_does_not_apply(engines: dict[str, Engine], tmp_path: Path) -> None:
    imported = import_parameters(A1111_SD_TEXT, make_settings(tmp_path), family="flux")
    ignored = {item.name: item for item in imported.ignored}
    assert ignored["Negative prompt"].value == "blurry, lowres" and "FLUX.1" in ignored["Negative prompt"].reason
    assert ignored["Sampler"].value == "DPM++ 2M Karras" and ignored["Clip skip"].value == "2"
    request = imported.request
    assert (request.negative_prompt, request.scheduler, request.clip_skip) == ("", None, None)
    assert engines["flux"].generate(request).images[0].width == SIZE
    # the same text for an SD model keeps every setting
    kept = import_parameters(A1111_SD_TEXT, make_settings(tmp_path), family="sd15").request
    assert (kept.negative_prompt, kept.scheduler, kept.clip_skip) == ("blurry, lowres", "DPM++ 2M Karras", 2)
