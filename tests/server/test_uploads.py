"""Uploads: an image's size is read from its header and refused before any decode; uploads in progress per user
are limited (429 with Retry-After); malformed uploads answer 4xx, never 500."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageFile

from imageloop.server.services import Services
from tests.server.kit import make_user

HUGE_SIDE = 13_000


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def solid_png(width: int, height: int) -> bytes:
    """A valid greyscale PNG of one colour, written row by row: a huge declared size in a small file."""
    packer = zlib.compressobj(9)
    row = b"\0" * (1 + width)  # filter byte, then one byte a pixel
    compressed = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", compressed) + _chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def huge_png() -> bytes:
    return solid_png(HUGE_SIDE, HUGE_SIDE)


@pytest.fixture(scope="module")
def app_overrides() -> dict[str, Any]:
    return {"server": {"max_body_bytes": 64_000, "max_concurrent_uploads": 1}}


@pytest.fixture
def decoded_sizes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[int, int]]]:
    """The size of every image Pillow decodes while the test runs."""
    sizes: list[tuple[int, int]] = []
    load = ImageFile.ImageFile.load

    def counting_load(self: ImageFile.ImageFile) -> Any:
        sizes.append(self.size)
        return load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
    yield sizes


def _small_png(seed: int) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (seed * 40 % 256, 90, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def _lora_upload(images: list[bytes]) -> dict[str, Any]:
    return {"data": {"name": "look", "trigger": "zkx"},
            "files": [("images", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]}


def test_a_huge_declared_image_is_refused_before_decode(
    client: TestClient, services: Services, huge_png: bytes, decoded_sizes: list[tuple[int, int]]
) -> None:
    assert len(huge_png) < 1_000_000  # 169 million pixels in a file under 1 MB
    _, key = make_user(services.storage, "bomb-uploader")
    images = [_small_png(i) for i in range(4)] + [huge_png]
    response = client.post("/api/v1/loras", headers={"Authorization": f"Bearer {key}"}, **_lora_upload(images))
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "images[4]"
    assert f"at most {services.settings.server.max_image_pixels} pixels" in response.json()["message"]
    assert (HUGE_SIDE, HUGE_SIDE) not in decoded_sizes
    assert services.settings.server.max_image_pixels == Image.MAX_IMAGE_PIXELS


def test_a_huge_png_for_its_parameters_is_never_decoded(
    client: TestClient, services: Services, huge_png: bytes, decoded_sizes: list[tuple[int, int]]
) -> None:
    _, key = make_user(services.storage, "bomb-parameters")
    response = client.post("/api/v1/generations/from-png", headers={"Authorization": f"Bearer {key}"},
                           files={"png": ("a.png", huge_png, "image/png")})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "png"
    assert (HUGE_SIDE, HUGE_SIDE) not in decoded_sizes


def test_uploads_in_progress_per_user_are_limited(client: TestClient, services: Services) -> None:
    user, key = make_user(services.storage, "busy-uploader")
    _, other = make_user(services.storage, "calm-uploader")
    upload = _lora_upload([_small_png(i) for i in range(3)])  # too few: answered 422 once admitted
    with services.uploads.hold(user):  # one upload of this user in progress (the limit here)
        busy = client.post("/api/v1/loras", headers={"Authorization": f"Bearer {key}"}, **upload)
        assert busy.status_code == 429, busy.text
        assert int(busy.headers["retry-after"]) >= 1 and "uploads" in busy.json()["message"]
        png = client.post("/api/v1/generations/from-png", headers={"Authorization": f"Bearer {key}"},
                          files={"png": ("a.png", _small_png(1), "image/png")})
        assert png.status_code == 429
        # Other users are not held up.
        assert client.post("/api/v1/loras", headers={"Authorization": f"Bearer {other}"}, **upload).status_code == 422
    assert client.post("/api/v1/loras", headers={"Authorization": f"Bearer {key}"}, **upload).status_code == 422


@pytest.mark.parametrize("data", [b"", b"\x89PNG\r\n\x1a\n", b"\x89PNG\r\n\x1a\n" + b"\xff" * 40, b"GIF89a" + b"\0" * 7,
                                  b"\xff\xd8\xff\xe0" + b"\0" * 30, b"RIFF\0\0\0\0WEBPVP8 "])
def test_malformed_uploads_answer_4xx_never_500(client: TestClient, services: Services, data: bytes) -> None:
    _, key = make_user(services.storage, f"malformed-{len(data)}-{data[:4].hex()}")
    headers = {"Authorization": f"Bearer {key}"}
    lora = client.post("/api/v1/loras", headers=headers, **_lora_upload([_small_png(i) for i in range(4)] + [data]))
    assert lora.status_code == 422 and lora.json()["field"] == "images[4]", lora.text
    png = client.post("/api/v1/generations/from-png", headers=headers, files={"png": ("a.png", data, "image/png")})
    assert png.status_code == 422 and png.json()["field"] == "png", png.text


@pytest.mark.parametrize("path", ["/api/v1/loras", "/api/v1/generations/from-png"])
def test_malformed_multipart_bodies_answer_4xx_never_500(client: TestClient, services: Services, path: str) -> None:
    _, key = make_user(services.storage, f"multipart-{path.rsplit('/', 1)[-1]}")
    headers = {"Authorization": f"Bearer {key}"}
    attempts: list[dict[str, Any]] = [
        {"json": {"name": "look", "trigger": "zkx", "images": ["aGVsbG8="], "png": "aGVsbG8="}},
        {"data": {"name": "look", "trigger": "zkx", "images": "not a file", "png": "not a file"}},
        {"content": b"--x\r\nContent-Disposition: form-data; name=\"png\"\r\n\r\nunterminated",
         "headers": {"Content-Type": "multipart/form-data; boundary=x"}},
        {"content": b"garbage", "headers": {"Content-Type": "multipart/form-data"}},
        {"content": b"\xff\xfe" * 100, "headers": {"Content-Type": b"multipart/form-data; boundary=\xff"}},
        {"files": {"images": ("", b"", ""), "png": ("", b"", "")}},
    ]
    for attempt in attempts:
        extra = attempt.pop("headers", {})
        response = client.post(path, headers={**headers, **extra}, **attempt)
        assert 400 <= response.status_code < 500, (attempt, response.status_code, response.text)
