"""A1111 ``parameters`` PNG text chunk: write, read back, parse A1111's own output."""

from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from PIL import Image

from imageloop.engine.pngmeta import (
    encode_png,
    format_parameters,
    parse_parameters,
    read_png_image_parameters,
    read_png_parameters,
)
from imageloop.engine.request import GenerationRequest
from imageloop.engine.schedulers import SCHEDULER_NAMES
from imageloop.errors import InvalidRequestError, UnknownNameError

HASH = "0123456789abcdef" * 4


def resolved(**fields: object) -> GenerationRequest:
    base: dict[str, object] = {"prompt": "a cat in the rain, monochrome", "negative_prompt": "blurry, (ugly:1.3)",
                               "steps": 20, "guidance_scale": 7.0, "seed": 1, "width": 512, "height": 768,
                               "scheduler": "Euler a"}
    base.update(fields)
    return GenerationRequest(**base)  # type: ignore[arg-type]


def test_format_matches_a1111_layout() -> None:
    text = format_parameters(resolved(), seed=1, model_name="embedded", model_hash=HASH)
    assert text == (
        "a cat in the rain, monochrome\n"
        "Negative prompt: blurry, (ugly:1.3)\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x768, Model hash: 0123456789, Model: embedded"
    )


def test_png_round_trip_reproduces_the_request() -> None:
    request = resolved(recipe="moody", style="film-noir", guidance_scale=4.5)
    png = encode_png(Image.new("RGB", (8, 8)), format_parameters(request, seed=1, model_name="m", model_hash=HASH))
    assert read_png_parameters(png) == request
    details = read_png_image_parameters(png)
    assert details.model_hash == HASH[:10] and details.model_name == "m"


def test_batch_image_records_its_own_seed() -> None:
    request = resolved(seed=100, num_images=4)
    back = parse_parameters(format_parameters(request, seed=102, model_name="m", model_hash=HASH)).request
    assert back.seed == 102 and back.num_images == 1


def test_unicode_prompt_survives_in_png() -> None:
    request = resolved(prompt="雨中的猫, 黑白", negative_prompt="")
    png = encode_png(Image.new("RGB", (8, 8)), format_parameters(request, seed=1, model_name="m", model_hash=HASH))
    assert read_png_parameters(png) == request


def test_reads_a1111_output_with_schedule_type_and_extras() -> None:
    text = (
        "masterpiece, (best quality:1.2), a castle\nat night\n"
        "Negative prompt: lowres, bad hands\n"
        "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 3735928559, Size: 832x1216, "
        'Model hash: 31e35c80fc, Model: sd_xl_base_1.0, Lora hashes: "a: 1234, b: 5678", Version: v1.10.1'
    )
    details = parse_parameters(text)
    request = details.request
    assert request.prompt == "masterpiece, (best quality:1.2), a castle\nat night"
    assert request.negative_prompt == "lowres, bad hands"
    assert (request.steps, request.scheduler, request.guidance_scale) == (28, "DPM++ 2M Karras", 6.5)
    assert (request.seed, request.width, request.height) == (3735928559, 832, 1216)
    assert details.extras == {"Lora hashes": "a: 1234, b: 5678", "Version": "v1.10.1"}


def test_values_with_commas_are_quoted_and_read_back() -> None:
    request = resolved(recipe="a,b: c")
    text = format_parameters(request, seed=1, model_name="name, with comma", model_hash=HASH)
    assert 'Recipe: "a,b: c"' in text
    details = parse_parameters(text)
    assert details.request.recipe == "a,b: c" and details.model_name == "name, with comma"


def test_prompt_only_text() -> None:
    assert parse_parameters("just a prompt").request.prompt == "just a prompt"


def test_bad_values_raise_named_errors() -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_parameters("x\nSteps: 20, Sampler: Euler, Size: big, Seed: 1")
    assert info.value.field == "Size"
    with pytest.raises(UnknownNameError):
        parse_parameters("x\nSteps: 20, Sampler: DPM fast, Seed: 1")
    with pytest.raises(InvalidRequestError) as info:
        parse_parameters("x\nSteps: -3, Sampler: Euler, Seed: 1")
    assert info.value.field == "steps"


def test_png_without_parameters_or_not_png() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    with pytest.raises(InvalidRequestError, match="parameters"):
        read_png_parameters(buffer.getvalue())
    jpeg = io.BytesIO()
    Image.new("RGB", (8, 8)).save(jpeg, format="JPEG")
    with pytest.raises(InvalidRequestError, match="not a PNG"):
        read_png_parameters(jpeg.getvalue())
    with pytest.raises(InvalidRequestError):
        read_png_parameters(b"garbage")


def test_encoding_is_deterministic() -> None:
    image = Image.new("RGB", (16, 16), (1, 2, 3))
    text = "p\nSteps: 1, Seed: 2, Sampler: Euler"
    assert encode_png(image, text) == encode_png(image, text)


_prompt_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\r"), min_size=1, max_size=40
).filter(lambda s: s == s.strip() and not s.startswith("Negative prompt:"))


@hypothesis_settings(deadline=None)  # a loaded CI machine must not turn slowness into failures
@given(
    prompt=_prompt_text,
    negative=st.one_of(st.just(""), _prompt_text),
    steps=st.integers(1, 150),
    cfg=st.floats(0, 30, allow_nan=False).map(lambda x: round(x, 2)),
    seed=st.integers(0, 2**32 - 1),
    scheduler=st.sampled_from(SCHEDULER_NAMES),
)
def test_round_trip_property(prompt: str, negative: str, steps: int, cfg: float, seed: int, scheduler: str) -> None:
    request = resolved(prompt=prompt, negative_prompt=negative, steps=steps, guidance_scale=cfg, seed=seed,
                       scheduler=scheduler)
    assert parse_parameters(format_parameters(request, seed=seed, model_name="m", model_hash=HASH)).request == request
