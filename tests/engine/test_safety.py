"""When the NSFW check can find something: only plain text-to-image on a model trained on nudity-free renders is
exempt."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from PIL import Image

from imageloop.config import EMBEDDED_MODEL_DIR
from imageloop.engine.recipes import LoraWeight, Recipe
from imageloop.engine.request import GenerationRequest
from imageloop.engine.safety import nsfw_possible


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), "grey").save(out, format="PNG")
    return out.getvalue()


def test_plain_text_to_image_on_the_embedded_model_cannot_show_nudity() -> None:
    assert not nsfw_possible(EMBEDDED_MODEL_DIR, GenerationRequest(prompt="a fox"), None)


@pytest.mark.parametrize("field", ["init_image", "control_image", "ip_image"])
def test_outside_pixels_bring_the_check_back(field: str) -> None:
    request = GenerationRequest.model_validate({"prompt": "a fox", field: _png()})
    assert nsfw_possible(EMBEDDED_MODEL_DIR, request, None)


def test_a_lora_in_the_request_or_the_recipe_brings_the_check_back() -> None:
    with_lora = GenerationRequest(prompt="a fox", loras=(LoraWeight(file="mine", weight=0.8),))
    assert nsfw_possible(EMBEDDED_MODEL_DIR, with_lora, None)
    recipe = Recipe(name="r", loras=[LoraWeight(file="mine", weight=0.5)])
    assert nsfw_possible(EMBEDDED_MODEL_DIR, GenerationRequest(prompt="a fox"), recipe)


def test_any_other_model_is_checked(tmp_path: Path) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(EMBEDDED_MODEL_DIR, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    (folder / "knows.json").unlink()  # a user's model: no knows.json
    assert nsfw_possible(folder, GenerationRequest(prompt="a fox"), None)
    assert nsfw_possible(tmp_path / "model.safetensors", GenerationRequest(prompt="a fox"), None)


def test_knows_json_must_say_so(tmp_path: Path) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(EMBEDDED_MODEL_DIR, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    text = (folder / "knows.json").read_text().replace('"nudity_free_training": true', '"nudity_free_training": false')
    (folder / "knows.json").write_text(text)
    assert nsfw_possible(folder, GenerationRequest(prompt="a fox"), None)
