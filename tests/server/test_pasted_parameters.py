"""``parameters_text`` in ``POST /api/v1/generations``: parameters pasted from A1111, Forge or Civitai run with the
same settings, and the response lists each setting not honoured."""

from __future__ import annotations

from typing import Any

import torch
from fastapi.testclient import TestClient
from safetensors.torch import save_file

from imageloop.engine.pngmeta import read_png_image_parameters
from imageloop.server.services import Services
from tests import tiny
from tests.engine.tiny_loras import make_diffusers_lora
from tests.server.kit import make_user, wait_until

FORGE_TEXT = """a lighthouse on a cliff at dusk,
dramatic clouds, <lora:add_detail:0.6>
Negative prompt: easynegative, lowres
Steps: 3, Sampler: DPM++ SDE, Schedule type: Karras, CFG scale: 6, Seed: 42, Size: 64x64, \
Model hash: 9aba26abdf, Model: deliberate_v2, Denoising strength: 0.5, Clip skip: 2, Hires upscale: 1.5, \
Hires steps: 2, Hires upscaler: Latent, Lora hashes: "add_detail: 7c6bad76eb54", \
TI hashes: "easynegative: c74b4e810b03, badhandv4: 5e40d722fc3d", Version: f2.0.1v1.10.1-previous-313-g8a042934"""


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def wait_done(client: TestClient, key: str, generation_id: str) -> dict[str, Any]:
    body: dict[str, Any] = wait_until(
        lambda: client.get(f"/api/v1/generations/{generation_id}", headers=auth(key)).json(),
        lambda body: body["status"] in {"succeeded", "failed", "cancelled"})
    return body


def library(services: Services) -> None:
    settings = services.settings
    if not (settings.loras_dir / "add_detail.safetensors").exists():
        make_diffusers_lora(settings.loras_dir / "add_detail.safetensors")
    settings.embeddings_dir.mkdir(parents=True, exist_ok=True)
    save_file({"emb_params": torch.randn(2, tiny.TEXT_HIDDEN)},
              str(settings.embeddings_dir / "easynegative.safetensors"))


def test_pasted_forge_parameters_run_with_the_same_settings(client: TestClient, services: Services) -> None:
    library(services)
    _, key = make_user(services.storage, "paste-user")
    accepted = client.post("/api/v1/generations", headers=auth(key), json={"parameters_text": FORGE_TEXT})
    assert accepted.status_code == 202, accepted.text
    ignored = accepted.json()["ignored"]
    assert len(ignored) == 3, ignored
    assert any(line.startswith("Hires upscaler: Latent — approximated") for line in ignored)
    assert any(line.startswith("TI hashes: badhandv4") for line in ignored)
    assert any(line.startswith("Model: deliberate_v2") for line in ignored)
    done = wait_done(client, key, accepted.json()["id"])
    assert done["status"] == "succeeded", done["error"]
    assert done["final_prompt"] == "a lighthouse on a cliff at dusk,\ndramatic clouds"
    assert done["negative_prompt"] == "easynegative, lowres"
    assert done["params"]["scheduler"] == "DPM++ SDE Karras" and done["params"]["clip_skip"] == 2
    assert done["params"]["loras"] == [{"file": "add_detail", "weight": 0.6}]
    assert done["recipe"] is None  # pasted parameters run as written: no recipe is chosen for them
    image = done["images"][0]
    assert (image["seed"], image["width"], image["height"]) == (42, 96, 96)
    png = client.get(image["url"], headers=auth(key)).content
    back = read_png_image_parameters(png).request
    assert (back.hires_scale, back.hires_steps, back.hires_strength, back.clip_skip) == (1.5, 2, 0.5, 2)


def test_fields_beside_the_text_win(client: TestClient, services: Services) -> None:
    library(services)
    _, key = make_user(services.storage, "paste-override")
    accepted = client.post("/api/v1/generations", headers=auth(key), json={
        "parameters_text": FORGE_TEXT, "prompt": "a red boat", "params": {"seed": 7, "hires_scale": 2}})
    assert accepted.status_code == 202, accepted.text
    done = wait_done(client, key, accepted.json()["id"])
    assert done["status"] == "succeeded", done["error"]
    assert done["final_prompt"] == "a red boat" and done["params"]["seed"] == 7
    assert (done["images"][0]["width"], done["params"]["hires_scale"]) == (128, 2.0)


def test_missing_lora_and_outside_names_are_422(client: TestClient, services: Services) -> None:
    library(services)
    _, key = make_user(services.storage, "paste-errors")
    missing = client.post("/api/v1/generations", headers=auth(key), json={
        "parameters_text": FORGE_TEXT.replace("add_detail:0.6", "detail_tweaker:0.6")})
    assert missing.status_code == 422
    assert missing.json()["field"] == "parameters_text" and "detail_tweaker" in missing.json()["message"]
    outside = client.post("/api/v1/generations", headers=auth(key), json={
        "prompt": "a cat", "params": {"loras": [{"file": "sub/../../secret", "weight": 1}]}})
    assert outside.status_code == 422 and outside.json()["field"].startswith("params.loras")
    absolute = client.post("/api/v1/generations", headers=auth(key), json={
        "prompt": "a cat", "params": {"loras": [{"file": "/etc/x.safetensors"}]}})
    assert absolute.status_code == 422 and absolute.json()["field"] == "params.loras.0.file"


def test_a_png_upload_takes_its_parameters(client: TestClient, services: Services) -> None:
    import io

    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    library(services)
    _, key = make_user(services.storage, "paste-png")
    info = PngInfo()
    info.add_text("parameters", FORGE_TEXT.replace("Sampler: DPM++ SDE", "Sampler: DPM++ 2S a"))
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buffer, format="PNG", pnginfo=info)
    accepted = client.post("/api/v1/generations/from-png", headers=auth(key), data={"n": "2"},
                           files={"png": ("forge.png", buffer.getvalue(), "image/png")})
    assert accepted.status_code == 202, accepted.text
    assert any(line.startswith("Sampler: DPM++ 2S a — approximated") for line in accepted.json()["ignored"])
    done = wait_done(client, key, accepted.json()["id"])
    assert done["status"] == "succeeded", done["error"]
    assert done["params"]["scheduler"] == "DPM++ 2S Karras" and [i["seed"] for i in done["images"]] == [42, 43]
    not_png = client.post("/api/v1/generations/from-png", headers=auth(key),
                          files={"png": ("x.png", b"plain text", "image/png")})
    assert not_png.status_code == 422 and not_png.json()["field"] == "png"
    no_text = io.BytesIO()
    Image.new("RGB", (8, 8)).save(no_text, format="PNG")
    bare = client.post("/api/v1/generations/from-png", headers=auth(key),
                       files={"png": ("bare.png", no_text.getvalue(), "image/png")})
    assert bare.status_code == 422 and "parameters" in bare.json()["message"]
