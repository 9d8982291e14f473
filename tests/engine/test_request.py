"""GenerationRequest: validation with named errors, images, JSON round trip."""

from __future__ import annotations

import base64
import io
import json

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from PIL import Image

from imageloop.config import Settings
from imageloop.engine.request import GenerationRequest, check_limits
from imageloop.errors import InvalidRequestError, UnknownNameError


def png(color: tuple[int, int, int] = (10, 20, 30), size: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("fields", "field", "allowed_part"),
    [
        ({"width": 100}, "width", "multiple of 8"),
        ({"height": 32}, "height", ">= 64"),
        ({"width": 8192}, "width", "<= 4096"),
        ({"steps": 0}, "steps", ">= 1"),
        ({"steps": 5000}, "steps", "<= 1000"),
        ({"guidance_scale": -1}, "guidance_scale", ">= 0"),
        ({"seed": 2**40}, "seed", "<="),
        ({"num_images": 0}, "num_images", ">= 1"),
        ({"strength": 1.5, "init_image": png()}, "strength", "<= 1"),
        ({"strength": 0.0, "init_image": png()}, "strength", "> 0"),
        ({"controlnet_conditioning_scale": 3, "control_image": png()}, "controlnet_conditioning_scale", "<= 2"),
        ({"colour": "red"}, "colour", "prompt"),
        ({"steps": "many"}, "steps", "an integer"),
        ({"guidance_scale": "lots"}, "guidance_scale", "a number"),
        ({"scheduler": 3}, "scheduler", "text"),
    ],
)
def test_invalid_fields_are_named(fields: dict[str, object], field: str, allowed_part: str | None) -> None:
    with pytest.raises(InvalidRequestError) as info:
        GenerationRequest(prompt="a cat", **fields)  # type: ignore[arg-type]
    assert info.value.field == field
    assert info.value.message.startswith(f"{field}:")
    if allowed_part is not None:
        assert info.value.allowed is not None and allowed_part in info.value.allowed


def test_unknown_scheduler_lists_known_names() -> None:
    with pytest.raises(UnknownNameError) as info:
        GenerationRequest(prompt="a cat", scheduler="Eular a")
    assert info.value.field == "scheduler" and "Euler a" in info.value.known


def test_scheduler_name_is_canonicalised() -> None:
    assert GenerationRequest(prompt="x", scheduler="dpm++ 2m karras").scheduler == "DPM++ 2M Karras"


def test_missing_prompt_is_named() -> None:
    with pytest.raises(InvalidRequestError) as info:
        GenerationRequest.model_validate({"steps": 3})
    assert info.value.field == "prompt" and "required" in (info.value.allowed or "")


@pytest.mark.parametrize("junk", [b"not an image", b"\x89PNG\r\n\x1a\n" + b"\0" * 20, "bm90IGFuIGltYWdl", "%%%"])
def test_undecodable_images_are_rejected(junk: bytes | str) -> None:
    for field in ("init_image", "control_image"):
        with pytest.raises(InvalidRequestError) as info:
            GenerationRequest(prompt="x", **{field: junk})  # type: ignore[arg-type]
        assert info.value.field == field


def test_image_options_need_their_image() -> None:
    with pytest.raises(InvalidRequestError) as info:
        GenerationRequest(prompt="x", strength=0.5)
    assert info.value.field == "strength"
    with pytest.raises(InvalidRequestError) as info:
        GenerationRequest(prompt="x", controlnet_conditioning_scale=0.5)
    assert info.value.field == "controlnet_conditioning_scale"


def test_images_accepted_as_pil_bytes_or_base64() -> None:
    raw = png()
    from_pil = GenerationRequest(prompt="x", init_image=Image.open(io.BytesIO(raw)))
    from_b64 = GenerationRequest(prompt="x", init_image=base64.b64encode(raw).decode())
    from_data_url = GenerationRequest(prompt="x", init_image="data:image/png;base64," + base64.b64encode(raw).decode())
    assert from_b64.init_image == from_data_url.init_image == raw
    assert Image.open(io.BytesIO(from_pil.init_image or b"")).getpixel((0, 0)) == (10, 20, 30)


def test_json_round_trip_with_images() -> None:
    request = GenerationRequest(
        prompt="a (cat:1.2)", negative_prompt="blurry", steps=12, guidance_scale=5.5, seed=7, width=64, height=128,
        scheduler="Euler a", num_images=2, init_image=png(), strength=0.6, control_image=png((1, 2, 3)),
        controlnet_conditioning_scale=0.8,
    )
    text = request.model_dump_json()
    assert isinstance(json.loads(text)["init_image"], str)  # base64 in JSON
    assert GenerationRequest.model_validate_json(text) == request
    assert GenerationRequest.model_validate(json.loads(text)) == request


def test_every_batch_seed_stays_in_range() -> None:
    GenerationRequest(prompt="x", seed=2**32 - 3, num_images=3)
    with pytest.raises(InvalidRequestError) as info:
        GenerationRequest(prompt="x", seed=2**32 - 2, num_images=3)
    assert info.value.field == "seed"


def test_minus_one_seed_means_random() -> None:
    assert GenerationRequest(prompt="x", seed=-1).seed is None


def test_request_is_frozen() -> None:
    request = GenerationRequest(prompt="x")
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises its own ValidationError type
        request.steps = 3  # type: ignore[misc]


def test_mode_follows_images() -> None:
    assert GenerationRequest(prompt="x").mode == "txt2img"
    assert GenerationRequest(prompt="x", init_image=png()).mode == "img2img"
    assert GenerationRequest(prompt="x", control_image=png()).mode == "controlnet"
    assert GenerationRequest(prompt="x", init_image=png(), control_image=png()).mode == "controlnet_img2img"


def test_settings_limits(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(data_dir=tmp_path, engine={"max_steps": 30, "max_images": 4, "max_pixels": 128 * 128})
    check_limits(GenerationRequest(prompt="x", steps=30, num_images=4, width=128, height=128), settings)
    for fields, field in (({"steps": 31}, "steps"), ({"num_images": 5}, "num_images"),
                          ({"width": 256, "height": 128}, "width")):
        with pytest.raises(InvalidRequestError) as info:
            check_limits(GenerationRequest(prompt="x", **fields), settings)  # type: ignore[arg-type]
        assert info.value.field == field


def test_sizes_are_limited_by_the_models_native_size(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(data_dir=tmp_path)  # the embedded model: 64x64, times engine.max_size_multiple 4
    check_limits(GenerationRequest(prompt="x", width=256, height=64), settings)
    for fields, field in (({"width": 4096, "height": 64}, "width"), ({"width": 64, "height": 264}, "height"),
                          ({"width": 256, "height": 256, "hires_scale": 1.5}, "hires_scale")):
        with pytest.raises(InvalidRequestError) as info:
            check_limits(GenerationRequest(prompt="x", **fields), settings)  # type: ignore[arg-type]
        assert info.value.field == field and "<= 256 (the model's native size 64" in str(info.value.allowed)
    wider = Settings(data_dir=tmp_path, engine={"max_size_multiple": 8})
    check_limits(GenerationRequest(prompt="x", width=512, height=64), wider)


def test_init_and_control_images_over_the_pixel_setting_are_refused_from_the_header(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.server.test_uploads import solid_png

    settings = Settings(data_dir=tmp_path, server={"max_image_pixels": 100 * 100})
    check_limits(GenerationRequest(prompt="x", init_image=solid_png(100, 100)), settings)
    for field in ("init_image", "control_image"):
        with pytest.raises(InvalidRequestError) as info:
            check_limits(GenerationRequest(prompt="x", **{field: solid_png(101, 100)}), settings)  # type: ignore[arg-type]
        assert info.value.field == field and "at most 10000 pixels" in str(info.value)


@hypothesis_settings(deadline=None)  # a loaded CI machine must not turn slowness into failures
@given(
    prompt=st.text(max_size=50),
    steps=st.one_of(st.none(), st.integers(1, 1000)),
    seed=st.one_of(st.none(), st.integers(0, 2**32 - 1)),
    size=st.one_of(st.none(), st.integers(8, 512).map(lambda n: n * 8)),
)
def test_canonical_json_is_stable(prompt: str, steps: int | None, seed: int | None, size: int | None) -> None:
    a = GenerationRequest(prompt=prompt, steps=steps, seed=seed, width=size)
    b = GenerationRequest.model_validate_json(a.model_dump_json())
    assert a.canonical_json() == b.canonical_json() and a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != GenerationRequest(prompt=prompt + "!", steps=steps, seed=seed, width=size).fingerprint()
