"""Pasted A1111 / Forge / Civitai ``parameters`` texts -> requests with the same settings; the rest reported by name.

The fixtures are copied in the exact layout each tool writes (A1111 1.6 with the sampler and schedule in one name,
A1111 1.10 and Forge with ``Schedule type`` apart, Civitai with unquoted JSON values)."""

from __future__ import annotations

from pathlib import Path

import pytest

from imageloop.config import Settings
from imageloop.engine.infotext import import_parameters
from imageloop.engine.pngmeta import format_parameters, parse_parameters, split_parameters
from imageloop.engine.recipes import LoraWeight
from imageloop.engine.request import GenerationRequest
from imageloop.errors import InvalidRequestError

A1111_1_10 = """masterpiece, best quality, 1girl, solo, long hair, looking at viewer,
smile, outdoors, <lora:add_detail:0.7>, (detailed eyes:1.2)
Negative prompt: easynegative, (worst quality, low quality:1.4), watermark
Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234567890, Size: 512x768, \
Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.5, Clip skip: 2, Hires upscale: 2, \
Hires steps: 10, Hires upscaler: Latent, Lora hashes: "add_detail: 7c6bad76eb54", \
TI hashes: "easynegative: c74b4e810b03, badhandv4: 5e40d722fc3d", Version: v1.10.1"""

A1111_1_6 = """portrait of an old fisherman, weathered skin, <lora:more_details:0.5> <lora:style/film_grain:1>
Negative prompt: (worst quality:2), blurry
Steps: 25, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 3053449741, Size: 512x768, Model hash: 4199bcdd14, \
Model: revAnimated_v122, Clip skip: 2, Lora hashes: "more_details: 3b8aa1d351ef, film_grain: 0c6aa0ea4a92", \
Version: v1.6.0"""

FORGE = """a lighthouse on a cliff at dusk, dramatic clouds
Negative prompt: lowres
Steps: 24, Sampler: DPM++ SDE, Schedule type: Karras, CFG scale: 6, Seed: 42, Size: 640x448, \
Model hash: 9aba26abdf, Model: deliberate_v2, Clip skip: 2, RNG: CPU, \
Version: f2.0.1v1.10.1-previous-313-g8a042934, Diffusion in Low Bits: Automatic (fp16 LoRA), Module 1: sdxl_vae"""

CIVITAI = """cinematic photo of a red fox in snow, <lora:add_detail:1>
Negative prompt: cartoon
Steps: 30, Sampler: Euler a, CFG scale: 5, Seed: 123, Size: 832x1216, Clip skip: 2, \
Created Date: 2024-06-01T1234Z, Civitai resources: [{"type":"checkpoint","modelVersionId":290640,\
"modelName":"Pony Diffusion, V6"},{"type":"lora","weight":1,"modelVersionId":87153}], Civitai metadata: {}"""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = Settings(data_dir=tmp_path, engine={"device": "cpu"})
    for name in ("add_detail", "more_details", "style/film_grain"):
        path = settings.loras_dir / f"{name}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not read by the import")
    settings.embeddings_dir.mkdir(parents=True)
    (settings.embeddings_dir / "EasyNegative.safetensors").write_bytes(b"")
    return settings


def ignored_names(imported: object) -> dict[str, str]:
    return {item.name: item.reason for item in imported.ignored}  # type: ignore[attr-defined]


def test_a1111_1_10_text_gives_the_same_settings(settings: Settings) -> None:
    imported = import_parameters(A1111_1_10, settings)
    r = imported.request
    assert r.prompt == ("masterpiece, best quality, 1girl, solo, long hair, looking at viewer,\n"
                        "smile, outdoors, (detailed eyes:1.2)")
    assert r.negative_prompt == "easynegative, (worst quality, low quality:1.4), watermark"
    assert (r.steps, r.guidance_scale, r.seed, r.width, r.height) == (20, 7.0, 1234567890, 512, 768)
    assert r.scheduler == "DPM++ 2M Karras"
    assert r.clip_skip == 2
    assert (r.hires_scale, r.hires_steps, r.hires_strength) == (2.0, 10, 0.5)
    assert r.loras == (LoraWeight(file="add_detail", weight=0.7),)
    assert (imported.model_name, imported.model_hash) == ("v1-5-pruned-emaonly", "6ce0161689")
    assert imported.embeddings == ["easynegative"]
    ignored = ignored_names(imported)
    # badhandv4 is missing from the embeddings folder; the Latent upscaler is approximated in pixel space.
    assert set(ignored) == {"TI hashes", "Hires upscaler"}
    assert "badhandv4" in next(str(i) for i in imported.ignored if i.name == "TI hashes")
    assert "Lanczos" in ignored["Hires upscaler"]


def test_a1111_1_6_combined_sampler_name_and_loras_in_sub_folders(settings: Settings) -> None:
    imported = import_parameters(A1111_1_6, settings)
    r = imported.request
    assert r.scheduler == "DPM++ 2M Karras" and r.clip_skip == 2 and r.hires_scale is None
    assert r.prompt == "portrait of an old fisherman, weathered skin,"[:-1]
    assert r.loras == (LoraWeight(file="more_details", weight=0.5), LoraWeight(file="style/film_grain", weight=1.0))
    assert imported.ignored == []


def test_forge_dpmpp_sde_karras_is_honoured_and_its_extras_are_reported(settings: Settings) -> None:
    imported = import_parameters(FORGE, settings)
    r = imported.request
    assert r.scheduler == "DPM++ SDE Karras"
    assert (r.steps, r.guidance_scale, r.width, r.height, r.clip_skip) == (24, 6.0, 640, 448, 2)
    assert set(ignored_names(imported)) == {"RNG", "Diffusion in Low Bits", "Module 1"}


def test_civitai_json_values_are_kept_whole(settings: Settings) -> None:
    _, _, values = split_parameters(CIVITAI)
    assert values["Civitai resources"].endswith('"modelVersionId":87153}]')
    imported = import_parameters(CIVITAI, settings)
    assert imported.request.scheduler == "Euler a" and imported.request.loras[0].file == "add_detail"
    assert imported.ignored == []


def test_missing_lora_is_an_error_naming_it_and_the_library(settings: Settings) -> None:
    text = A1111_1_10.replace("<lora:add_detail:0.7>", "<lora:detail_tweaker:0.7>")
    with pytest.raises(InvalidRequestError) as info:
        import_parameters(text, settings)
    assert info.value.field == "lora" and "detail_tweaker" in str(info.value)
    assert "add_detail" in str(info.value.allowed)


def test_lora_name_may_not_leave_the_library(settings: Settings) -> None:
    with pytest.raises(InvalidRequestError, match="may not leave"):
        import_parameters("a <lora:../secret:1>\nSteps: 2, Seed: 1, CFG scale: 7", settings)


@pytest.mark.parametrize(("sampler", "schedule", "expected", "reported"), [
    ("DPM++ 2S a", "Karras", "DPM++ 2S Karras", "Sampler"),
    ("DPM++ 2M", "Automatic", "DPM++ 2M Karras", None),
    ("DPM++ 2M SDE", "Exponential", "DPM++ 2M SDE Exponential", None),
    ("Euler", "SGM Uniform", "Euler SGM Uniform", None),
    ("Euler", "Align Your Steps", "Euler", "Schedule type"),
    ("Euler a", "Karras", "Euler a", "Schedule type"),
])
def test_sampler_and_schedule_type(
    settings: Settings, sampler: str, schedule: str, expected: str, reported: str | None
) -> None:
    text = f"a cat\nSteps: 20, Sampler: {sampler}, Schedule type: {schedule}, CFG scale: 7, Seed: 1"
    imported = import_parameters(text, settings)
    assert imported.request.scheduler == expected
    assert list(ignored_names(imported)) == ([reported] if reported else [])


def test_restart_sampler_is_reported_and_the_default_used(settings: Settings) -> None:
    imported = import_parameters("a cat\nSteps: 20, Sampler: Restart, Schedule type: Karras, CFG scale: 7, Seed: 1",
                                 settings)
    assert imported.request.scheduler is None
    assert set(ignored_names(imported)) == {"Sampler", "Schedule type"}
    assert "no such sampler" in ignored_names(imported)["Sampler"]


def test_img2img_denoising_strength_without_hires_is_reported(settings: Settings) -> None:
    imported = import_parameters("a cat\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Denoising strength: 0.4",
                                 settings)
    assert imported.request.hires_strength is None
    assert "source image" in ignored_names(imported)["Denoising strength"]


def test_hires_resize_keeping_the_aspect_becomes_a_scale(settings: Settings) -> None:
    text = ("a cat\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 512x768, Denoising strength: 0.3, "
            "Hires resize: 768x1152, Hires steps: 0, Hires upscaler: R-ESRGAN 4x+, Hires sampler: Euler a")
    imported = import_parameters(text, settings)
    r = imported.request
    assert (r.hires_scale, r.hires_steps, r.hires_strength) == (1.5, None, 0.3)
    assert set(ignored_names(imported)) == {"Hires upscaler", "Hires sampler"}


def test_another_model_is_reported(settings: Settings) -> None:
    imported = import_parameters(A1111_1_6, settings, model_name="embedded", model_hash="ffff")
    assert "embedded" in ignored_names(imported)["Model"]
    same = import_parameters(A1111_1_6, settings, model_name="other", model_hash="4199bcdd14aa")
    assert "Model" not in ignored_names(same)


def test_negative_prompt_tags_and_hypernetworks_are_removed_and_reported(settings: Settings) -> None:
    text = "a cat <hypernet:anime:1>\nNegative prompt: <lora:add_detail:-1>, blurry\nSteps: 20, CFG scale: 7, Seed: 1"
    imported = import_parameters(text, settings)
    assert imported.request.prompt == "a cat" and imported.request.negative_prompt == "blurry"
    assert imported.request.loras == ()
    assert set(ignored_names(imported)) == {"<hypernet:anime>", "<lora:add_detail>"}


def test_our_own_text_round_trips_with_loras_clip_skip_and_hires() -> None:
    request = GenerationRequest(prompt="a cat", negative_prompt="blurry", steps=20, guidance_scale=7.0, seed=5,
                                width=512, height=512, scheduler="DPM++ SDE Karras", clip_skip=2, hires_scale=1.5,
                                hires_steps=8, hires_strength=0.45, loras=[LoraWeight(file="add_detail", weight=0.8)])
    text = format_parameters(request, seed=5, model_name="m", model_hash="0" * 64)
    assert text.startswith("a cat <lora:add_detail:0.8>\n")
    assert "Clip skip: 2, Hires upscale: 1.5, Hires steps: 8, Denoising strength: 0.45" in text
    assert parse_parameters(text).request == request


def test_renamed_lora_is_found_by_its_a1111_hash(settings: Settings) -> None:
    import torch
    from safetensors.torch import save_file

    from imageloop.engine.infotext import addnet_hash

    renamed = settings.loras_dir / "downloads" / "civitai_12345.safetensors"
    renamed.parent.mkdir(parents=True)
    save_file({"lora_unet_x.lora_down.weight": torch.ones(2, 2)}, str(renamed), metadata={"ss_output_name": "a"})
    digest = addnet_hash(renamed)
    # The metadata is outside the hashed part: the same tensors with other metadata hash the same.
    other = settings.loras_dir / "other.safetensors"
    save_file({"lora_unet_x.lora_down.weight": torch.ones(2, 2)}, str(other), metadata={"ss_output_name": "bb"})
    assert addnet_hash(other) == digest
    other.unlink()
    text = ("a cat <lora:detail_tweaker:0.5>\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, "
            f'Lora hashes: "detail_tweaker: {digest[:12]}", Version: v1.10.1')
    imported = import_parameters(text, settings)
    assert imported.request.loras == (LoraWeight(file="downloads/civitai_12345", weight=0.5),)
    assert "has its hash" in ignored_names(imported)["<lora:detail_tweaker>"]
    with pytest.raises(InvalidRequestError, match="detail_tweaker"):
        import_parameters(text.replace(digest[:12], "0" * 12), settings)
