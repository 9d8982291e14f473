"""A reference image (IP-Adapter) through the generations API: accepted as base64 in params, checked like other
uploads (pixels from the header, body limit), stored with the generation, shown by its SHA-256, used by the worker."""

from __future__ import annotations

import base64
import hashlib
import io
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from imageloop.config import Settings
from imageloop.engine.pngmeta import png_parameters_text
from imageloop.errors import InvalidRequestError
from imageloop.jobs.requests import engine_request
from imageloop.server.services import Services
from tests import tiny
from tests.engine.tiny_ip_adapters import save_image_encoder, save_ip_adapter
from tests.server.kit import make_user, wait_until
from tests.server.test_uploads import solid_png


@pytest.fixture(scope="module")
def app_overrides(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> dict[str, Any]:
    library = tmp_path_factory.mktemp("ip-adapters")
    adapter = save_ip_adapter(library / "tiny.safetensors", tiny.make_sd15_unet())
    save_image_encoder(library / "image_encoder")
    return {"server": {"max_body_bytes": 64_000},
            "engine": {"model": str(tiny_model), "threads": 1, "device": "cpu", "ip_adapter": str(adapter)}}


def reference_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 48), (200, 40, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_reference_image_is_stored_shown_by_hash_and_used(client: TestClient, services: Services) -> None:
    user_id, key = make_user(services.storage, "ip-user")
    headers = {"Authorization": f"Bearer {key}"}
    png = reference_png()
    body = {"prompt": "a cat", "params": {"seed": 3, "ip_image": base64.b64encode(png).decode(), "ip_scale": 0.7}}
    accepted = client.post("/api/v1/generations", json=body, headers=headers)
    assert accepted.status_code in (200, 201, 202), accepted.text
    generation_id = accepted.json()["id"]
    done = wait_until(lambda: client.get(f"/api/v1/generations/{generation_id}", headers=headers).json(),
                      lambda out: out["status"] in {"succeeded", "failed", "cancelled"})
    assert done["status"] == "succeeded", done
    assert "ip_image" not in done["params"] and done["params"]["ip_scale"] == 0.7
    assert done["params"]["ip_image_sha256"] == hashlib.sha256(png).hexdigest()
    record = services.storage.generations.get(user_id, generation_id)
    assert isinstance(record.params["ip_image"], str)  # the record keeps the image to run (and rerun) it
    image = client.get(done["images"][0]["url"], headers=headers)
    text = png_parameters_text(image.content)
    assert "IP-Adapter: tiny" in text and "IP-Adapter scale: 0.7" in text


@pytest.mark.parametrize("image", ["not base64!", base64.b64encode(b"not an image").decode()])
def test_bad_reference_images_name_the_field(client: TestClient, services: Services, image: str) -> None:
    _, key = make_user(services.storage, f"ip-bad-{len(image)}")
    response = client.post("/api/v1/generations", json={"prompt": "a cat", "params": {"ip_image": image}},
                           headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "params.ip_image"


def test_a_huge_reference_is_refused_from_its_header(client: TestClient, services: Services) -> None:
    _, key = make_user(services.storage, "ip-huge")
    huge = base64.b64encode(solid_png(5000, 5000)).decode()  # a small file that declares 25 M pixels
    response = client.post("/api/v1/generations", json={"prompt": "a cat", "params": {"ip_image": huge}},
                           headers={"Authorization": f"Bearer {key}"})
    assert response.status_code in (413, 422), response.text
    if response.status_code == 422:
        assert response.json()["field"] == "params.ip_image"


def test_scale_without_image_and_no_adapter_configured(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    image = base64.b64encode(reference_png()).decode()
    with pytest.raises(InvalidRequestError) as no_adapter:
        engine_request(prompt="a cat", negative_prompt=None, params={"ip_image": image}, recipe=None, style=None,
                       settings=settings)
    assert no_adapter.value.field == "ip_image" and "IMAGELOOP_ENGINE__IP_ADAPTER" in no_adapter.value.message
    with pytest.raises(InvalidRequestError) as scale_alone:
        engine_request(prompt="a cat", negative_prompt=None, params={"ip_scale": 0.5}, recipe=None, style=None,
                       settings=settings)
    assert scale_alone.value.field == "ip_scale"
