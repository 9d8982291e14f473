"""What pasted A1111/Forge settings need from the engine, on tiny random models: a request's own LoRAs, clip skip,
textual-inversion embeddings by name, DPM++ SDE seeded per image, and hires fix as a second img2img pass."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from imageloop.config import Settings
from imageloop.engine.conditioning import encode_prompt
from imageloop.engine.embeddings import names_in, read_vectors
from imageloop.engine.engine import Engine
from imageloop.engine.infotext import import_parameters
from imageloop.engine.pngmeta import read_png_image_parameters
from imageloop.engine.recipes import LoraWeight
from imageloop.engine.request import GenerationRequest
from imageloop.errors import InvalidRequestError, RecipeError
from tests import tiny
from tests.engine.tiny_loras import make_diffusers_lora

MODEL_DEFAULTS = {"steps": 2, "guidance_scale": 5.0, "scheduler": "Euler", "width": 64, "height": 64}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("a1111-models")
    return {"sd15": tiny.save_sd15(root / "sd15", model_defaults=MODEL_DEFAULTS),
            "sdxl": tiny.save_sdxl(root / "sdxl", model_defaults=MODEL_DEFAULTS)}


def make_settings(root: Path) -> Settings:
    return Settings(data_dir=root, engine={"device": "cpu", "result_cache_size": 0})


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def test_request_loras_act_as_the_same_recipe_would(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    make_diffusers_lora(settings.loras_dir / "detail.safetensors")
    settings.recipes_dir.mkdir(parents=True)
    (settings.recipes_dir / "detailed.json").write_text(json.dumps(
        {"name": "detailed", "loras": [{"file": "detail", "weight": 0.8}]}))
    engine = Engine(settings, model=model_dirs["sd15"])
    plain = GenerationRequest(prompt="a dark forest", seed=1)
    with_lora = engine.generate(plain.model_copy(update={"loras": (LoraWeight(file="detail", weight=0.8),)}))
    by_recipe = engine.generate(plain.model_copy(update={"recipe": "detailed"}))
    assert with_lora.images[0].png != engine.generate(plain).images[0].png
    assert (pixels(with_lora.images[0].png) == pixels(by_recipe.images[0].png)).all()
    # The PNG says it as A1111 does, and reads back to the same LoRA.
    back = read_png_image_parameters(with_lora.images[0].png)
    assert back.request.loras == (LoraWeight(file="detail", weight=0.8),)
    with pytest.raises(RecipeError, match="missing"):
        engine.check(plain.model_copy(update={"loras": (LoraWeight(file="missing"),)}))


def test_clip_skip_reads_the_layer_before_the_last_as_diffusers_does() -> None:
    pipe = tiny.sd15_pipeline()
    ours = encode_prompt(pipe, "a red cat", clip_skip=2).embeds
    ids = pipe.tokenizer("a red cat", padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         return_tensors="pt").input_ids
    with torch.no_grad():  # diffusers' clip_skip=1: the layer before the last, through the final layer norm
        output = pipe.text_encoder(ids, output_hidden_states=True)
        encoder = pipe.text_encoder
        theirs = getattr(encoder, "text_model", encoder).final_layer_norm(output.hidden_states[-2])
        last = output.last_hidden_state
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert torch.allclose(encode_prompt(pipe, "a red cat").embeds, last, atol=1e-5)
    assert not torch.allclose(ours, last, atol=1e-3)
    with pytest.raises(InvalidRequestError, match="clip_skip"):
        encode_prompt(pipe, "a red cat", clip_skip=12)


def test_clip_skip_changes_the_image_and_is_recorded(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    engine = Engine(make_settings(tmp_path), model=model_dirs["sd15"])
    plain = engine.generate(GenerationRequest(prompt="a red cat", seed=3))
    skipped = engine.generate(GenerationRequest(prompt="a red cat", seed=3, clip_skip=2))
    one = engine.generate(GenerationRequest(prompt="a red cat", seed=3, clip_skip=1))
    assert skipped.images[0].png != plain.images[0].png
    assert (pixels(one.images[0].png) == pixels(plain.images[0].png)).all()
    assert read_png_image_parameters(skipped.images[0].png).request.clip_skip == 2


def write_embedding(path: Path, rows: int, width: int = tiny.TEXT_HIDDEN, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    vectors = torch.randn(rows, width, generator=torch.Generator().manual_seed(seed))
    if path.suffix == ".pt":  # A1111's own layout
        torch.save({"string_to_param": {"*": vectors}, "name": path.stem, "step": 100}, path)
    else:  # A1111/Civitai .safetensors layout
        save_file({"emb_params": vectors}, str(path))


def test_embedding_named_in_the_negative_prompt_is_loaded_and_used(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    request = GenerationRequest(prompt="a cat", negative_prompt="EasyNegative, blurry", seed=4)
    before = Engine(settings, model=model_dirs["sd15"]).generate(request)
    write_embedding(settings.embeddings_dir / "easynegative.safetensors", rows=3)
    engine = Engine(settings, model=model_dirs["sd15"])
    runs = [engine.generate(request) for _ in range(2)]
    assert runs[0].images[0].png != before.images[0].png
    assert runs[0].images[0].png == runs[1].images[0].png  # loaded once, used again
    tokenizer = engine.model.pipe.tokenizer
    assert sum(token.startswith("ti_easynegative_") for token in tokenizer.get_added_vocab()) == 3
    # An edited file is a new embedding: the old encoding is not reused.
    write_embedding(settings.embeddings_dir / "easynegative.safetensors", rows=3, seed=9)
    assert engine.generate(request).images[0].png != runs[0].images[0].png


def test_a1111_pt_embedding_and_one_for_another_model(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    write_embedding(settings.embeddings_dir / "sub" / "badhand.pt", rows=2)
    assert read_vectors(settings.embeddings_dir / "sub" / "badhand.pt")["clip_l"].shape == (2, tiny.TEXT_HIDDEN)
    engine = Engine(settings, model=model_dirs["sd15"])
    assert engine.generate(GenerationRequest(prompt="a hand", negative_prompt="(badhand:1.2)", seed=1)).images
    write_embedding(settings.embeddings_dir / "wide.safetensors", rows=1, width=tiny.TEXT_HIDDEN + 8)
    with pytest.raises(RecipeError, match=r"'wide'.*does not fit"):
        engine.generate(GenerationRequest(prompt="a cat, wide", seed=1))
    assert names_in("Wide-angle, wide", ["wide"]) == ["wide"] and names_in("wide-angle", ["wide"]) == []


def test_sdxl_embedding_loads_into_both_text_encoders(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    engine = Engine(settings, model=model_dirs["sdxl"])
    widths = [enc.get_input_embeddings().weight.shape[-1]
              for enc in (engine.model.pipe.text_encoder, engine.model.pipe.text_encoder_2)]
    settings.embeddings_dir.mkdir(parents=True)
    save_file({"clip_l": torch.randn(2, widths[0]), "clip_g": torch.randn(2, widths[1])},
              str(settings.embeddings_dir / "xlneg.safetensors"))
    request = GenerationRequest(prompt="a cat", negative_prompt="xlneg", seed=2)
    assert engine.generate(request).images[0].png != Engine(make_settings(tmp_path / "none"),
                                                            model=model_dirs["sdxl"]).generate(request).images[0].png
    assert any(t.startswith("ti_xlneg_") for t in engine.model.pipe.tokenizer_2.get_added_vocab())


def test_dpmpp_sde_is_seeded_per_image(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    request = GenerationRequest(prompt="a cat", seed=11, scheduler="DPM++ SDE Karras", num_images=2)
    runs = [Engine(make_settings(tmp_path), model=model_dirs["sd15"]).generate(request) for _ in range(2)]
    assert [i.png for i in runs[0].images] == [i.png for i in runs[1].images]
    alone = Engine(make_settings(tmp_path), model=model_dirs["sd15"]).generate(
        request.model_copy(update={"seed": 12, "num_images": 1}))
    assert (np.abs(pixels(alone.images[0].png) - pixels(runs[0].images[1].png)) <= 1).all()
    assert runs[0].images[0].png != runs[0].images[1].png


def test_hires_fix_is_a_second_pass_at_the_upscaled_size(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    engine = Engine(make_settings(tmp_path), model=model_dirs["sd15"])
    steps: list[tuple[int, int]] = []
    request = GenerationRequest(prompt="a cat", seed=6, hires_scale=1.5, hires_steps=4, hires_strength=0.5)
    result = engine.generate(request, on_step=lambda step, total: steps.append((step, total)) and None)
    image = result.images[0]
    assert (image.width, image.height) == (96, 96)
    assert Image.open(io.BytesIO(image.png)).size == (96, 96)
    # One count over both passes: the first pass's 2 steps, then 4 * 0.5.
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]
    plain = engine.generate(GenerationRequest(prompt="a cat", seed=6))
    upscaled = Image.open(io.BytesIO(plain.images[0].png)).resize((96, 96), Image.Resampling.LANCZOS)
    assert (pixels(image.png) != np.asarray(upscaled, dtype=np.int16)).any()  # denoised again, not only resized
    back = read_png_image_parameters(image.png).request
    assert (back.width, back.height, back.hires_scale, back.hires_steps, back.hires_strength) == (64, 64, 1.5, 4, 0.5)
    assert engine.generate(back).images[0].png == image.png  # the PNG repeats itself
    default = engine.resolve(GenerationRequest(prompt="a cat", seed=6, hires_scale=2))
    assert default.hires_strength == 0.7 and default.hires_steps is None


def test_pasted_text_runs_end_to_end(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    make_diffusers_lora(settings.loras_dir / "add_detail.safetensors")
    write_embedding(settings.embeddings_dir / "easynegative.safetensors", rows=2)
    text = ("a cat, <lora:add_detail:0.7>\nNegative prompt: easynegative\n"
            "Steps: 3, Sampler: DPM++ SDE, Schedule type: Karras, CFG scale: 6, Seed: 9, Size: 64x64, "
            "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.5, Clip skip: 2, "
            "Hires upscale: 2, Hires steps: 2, Hires upscaler: Latent, Lora hashes: \"add_detail: 7c6bad76eb54\", "
            "TI hashes: \"easynegative: c74b4e810b03\", Version: v1.10.1")
    imported = import_parameters(text, settings)
    result = Engine(settings, model=model_dirs["sd15"]).generate(imported.request)
    r = result.request
    assert (r.scheduler, r.clip_skip, r.hires_scale, r.steps) == ("DPM++ SDE Karras", 2, 2.0, 3)
    assert (result.images[0].width, result.images[0].height) == (128, 128)
    assert [i.name for i in imported.ignored] == ["Hires upscaler"]


def test_hires_fix_is_text_to_image_only() -> None:
    png = io.BytesIO()
    Image.new("RGB", (64, 64)).save(png, format="PNG")
    for images in ({"init_image": png.getvalue()}, {"control_image": png.getvalue()}):
        with pytest.raises(InvalidRequestError, match="hires_scale"):
            GenerationRequest(prompt="a cat", hires_scale=2, **images)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="hires_strength"):
        GenerationRequest(prompt="a cat", hires_strength=0.5)
