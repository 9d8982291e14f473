"""What a caller asks the engine for: :class:`GenerationRequest`, checked before any model work.

Fields left ``None`` are filled later from the recipe, then the model's defaults (see ``Engine.resolve``). Every
invalid field raises :class:`~imageloop.errors.InvalidRequestError` naming the field and what is allowed, including
pydantic's own type errors. Images (``init_image``, ``control_image``, ``ip_image``) are held as encoded image
bytes; PIL images are accepted and stored as PNG, and in JSON they travel as base64 strings.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
from dataclasses import dataclass
from typing import Any, Self

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from imageloop.config import Settings
from imageloop.engine.recipes import MAX_LORAS_PER_RECIPE, LoraWeight, Recipe
from imageloop.engine.schedulers import canonical_scheduler_name
from imageloop.errors import InvalidRequestError

MAX_SEED = 2**32 - 1
MIN_SIDE = 64
MAX_SIDE = 4096
MAX_PROMPT_CHARS = 20_000
MAX_IMAGE_PIXELS = 4096 * 4096
DEFAULT_STRENGTH = 0.75
DEFAULT_CONTROL_SCALE = 1.0
DEFAULT_IP_SCALE = 0.6  # the reference image steers, the prompt still counts (diffusers' examples use 0.5-0.7)
DEFAULT_HIRES_STRENGTH = 0.7  # A1111's default "Denoising strength" for hires fix
MAX_CLIP_SKIP = 12
MAX_HIRES_SCALE = 4.0


def hires_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """The size hires fix upscales ``width`` x ``height`` to: each side times ``scale``, down to a multiple of 8."""
    return int(width * scale) // 8 * 8, int(height * scale) // 8 * 8


def image_to_png(image: Image.Image) -> bytes:
    """Encode a PIL image as PNG bytes (RGB or RGBA kept as is, other modes converted to RGB)."""
    if image.mode not in ("RGB", "RGBA", "L"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def base64_image_bytes(value: str) -> bytes:
    """The bytes of base64 text (standard or URL-safe alphabet, padding optional, a ``data:`` URL too); ValueError
    if it is not base64."""
    text = value.split(",", 1)[1] if value.startswith("data:") else value
    # Standard or URL-safe alphabet (pydantic writes URL-safe), padding optional.
    text = "".join(text.split()).replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("expected base64 text of an image") from None


def check_image_pixels(data: bytes, field: str, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[int, int]:
    """The (width, height) an image's header declares, read without decoding its pixels; InvalidRequestError
    naming ``field`` if the bytes are not an image or it has more than ``max_pixels`` pixels. A small file can
    declare a huge image (a 13000x13000 PNG of one colour is a few hundred KB), so call this before any decode."""
    try:
        with Image.open(io.BytesIO(data)) as opened:  # lazy: reads the header only
            width, height = opened.size
    except Image.DecompressionBombError:  # over PIL's own limit (Image.MAX_IMAGE_PIXELS), also read from the header
        raise InvalidRequestError(field, "image is too large", allowed=f"at most {max_pixels} pixels") from None
    except (OSError, ValueError) as exc:
        raise InvalidRequestError(
            field, f"not an image Pillow can read ({exc})", allowed="PNG, JPEG or WebP bytes, or base64 text of them"
        ) from None
    if width * height > max_pixels:
        raise InvalidRequestError(field, f"image is {width}x{height}", allowed=f"at most {max_pixels} pixels")
    return width, height


def decode_image(data: bytes, field: str) -> Image.Image:
    """Decode image bytes to an RGB PIL image; InvalidRequestError naming ``field`` if they are not an image or
    declare more than MAX_IMAGE_PIXELS (checked from the header, before decoding)."""
    check_image_pixels(data, field)
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            return opened.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidRequestError(
            field, f"not a decodable image ({exc})", allowed="PNG, JPEG or WebP bytes, base64 text or a PIL image"
        ) from None


@dataclass(frozen=True)
class BaseLora:
    """A LoRA the service puts under every request's recipe on one base model (the served Diffusion-DPO LoRA):
    its ``.safetensors`` file, the ``tag`` recorded with what it made (appended to the result's model version), and
    the ``model_version`` it was trained on: on any other model the engine leaves it out."""

    file: str
    tag: str
    model_version: str
    weight: float = 1.0


class GenerationRequest(BaseModel):
    """One text-to-image (or img2img / ControlNet) request. ``None`` means "use the recipe's or model's default"."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", ser_json_bytes="base64", val_json_bytes="base64", arbitrary_types_allowed=False
    )

    prompt: str = Field(max_length=MAX_PROMPT_CHARS, description="What to draw; A1111 attention syntax allowed.")
    negative_prompt: str = Field(default="", max_length=MAX_PROMPT_CHARS, description="What to avoid.")
    steps: int | None = Field(default=None, ge=1, le=1000, description="Denoising steps.")
    guidance_scale: float | None = Field(default=None, ge=0.0, le=30.0, description="CFG scale.")
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED, description="None (or -1) = random; recorded.")
    width: int | None = Field(default=None, ge=MIN_SIDE, le=MAX_SIDE, multiple_of=8, description="Pixels.")
    height: int | None = Field(default=None, ge=MIN_SIDE, le=MAX_SIDE, multiple_of=8, description="Pixels.")
    scheduler: str | None = Field(default=None, description="A1111 sampler name, e.g. 'Euler a', 'DPM++ 2M Karras'.")
    num_images: int = Field(default=1, ge=1, le=64, description="Images in this batch; image i uses seed + i.")
    recipe: str | None = Field(default=None, min_length=1, max_length=200, description="Recipe name.")
    style: str | None = Field(default=None, min_length=1, max_length=200, description="Style preset name.")
    init_image: bytes | None = Field(default=None, description="img2img source image (encoded image bytes).")
    strength: float | None = Field(default=None, gt=0.0, le=1.0, description="img2img denoising strength.")
    control_image: bytes | None = Field(default=None, description="ControlNet condition image (sketch, scribble).")
    controlnet_conditioning_scale: float | None = Field(default=None, ge=0.0, le=2.0, description="ControlNet weight.")
    ip_image: bytes | None = Field(default=None, description="IP-Adapter reference image (encoded image bytes).")
    ip_scale: float | None = Field(
        default=None, ge=0.0, le=2.0,
        description=f"How strongly the reference image steers (IP-Adapter scale, default {DEFAULT_IP_SCALE}).")
    loras: tuple[LoraWeight, ...] = Field(
        default=(), max_length=MAX_LORAS_PER_RECIPE,
        description="LoRAs from the LoRA library added to the recipe's (A1111's <lora:name:weight> prompt tags).")
    clip_skip: int | None = Field(
        default=None, ge=1, le=MAX_CLIP_SKIP,
        description="A1111's Clip skip: 1 = the text encoder's last layer, 2 = the one before (SD1.x models; SDXL "
        "always uses its penultimate layer).")
    hires_scale: float | None = Field(
        default=None, gt=1.0, le=MAX_HIRES_SCALE,
        description="Hires fix: upscale the image by this factor and denoise it again (a second img2img pass).")
    hires_steps: int | None = Field(default=None, ge=1, le=1000, description="Hires fix steps (default: steps).")
    hires_strength: float | None = Field(
        default=None, gt=0.0, le=1.0, description=f"Hires fix denoising strength (default {DEFAULT_HIRES_STRENGTH}).")
    # The recipe object ``recipe`` names, when the caller resolved it (a user's private recipe, which the engine's
    # shared RecipeStore cannot see). Not a field: never serialized, never part of the canonical JSON.
    _resolved_recipe: Recipe | None = PrivateAttr(default=None)
    # A LoRA the service adds under the recipe (see BaseLora); like the resolved recipe, never serialized.
    _base_lora: BaseLora | None = PrivateAttr(default=None)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise invalid_request_from(exc) from None

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Self:
        """Validate a mapping; errors come out as InvalidRequestError."""
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as exc:
            raise invalid_request_from(exc) from None

    @classmethod
    def model_validate_json(cls, json_data: Any, *args: Any, **kwargs: Any) -> Self:
        """Validate JSON text (images as base64); errors come out as InvalidRequestError."""
        try:
            return super().model_validate_json(json_data, *args, **kwargs)
        except ValidationError as exc:
            raise invalid_request_from(exc) from None

    @field_validator("seed", mode="before")
    @classmethod
    def _minus_one_is_random(cls, value: Any) -> Any:
        # A1111 writes -1 for "random seed"; accept it as None.
        return None if value == -1 else value

    @field_validator("scheduler")
    @classmethod
    def _known_scheduler(cls, value: str | None) -> str | None:
        return None if value is None else canonical_scheduler_name(value)

    @field_validator("init_image", "control_image", "ip_image", mode="before")
    @classmethod
    def _image_bytes(cls, value: Any) -> Any:
        if isinstance(value, Image.Image):
            return image_to_png(value)
        if isinstance(value, str):
            return base64_image_bytes(value)
        return value

    @field_validator("init_image", "control_image", "ip_image")
    @classmethod
    def _decodable(cls, value: bytes | None, info: Any) -> bytes | None:
        if value is not None:
            decode_image(value, info.field_name)
        return value

    @model_validator(mode="after")
    def _batch_seeds_in_range(self) -> Self:
        # Image i uses seed + i; every image's seed must be one a request can name again.
        if self.seed is not None and self.seed + self.num_images - 1 > MAX_SEED:
            raise InvalidRequestError("seed", f"{self.seed} + {self.num_images - 1} (the batch's last seed) is too "
                                      "large", value=self.seed, allowed=f"seed + num_images - 1 <= {MAX_SEED}")
        return self

    @model_validator(mode="after")
    def _image_options_need_images(self) -> Self:
        if self.strength is not None and self.init_image is None:
            raise InvalidRequestError("strength", "only applies with an init_image", value=self.strength)
        if self.controlnet_conditioning_scale is not None and self.control_image is None:
            raise InvalidRequestError("controlnet_conditioning_scale", "only applies with a control_image",
                                      value=self.controlnet_conditioning_scale)
        if self.ip_scale is not None and self.ip_image is None:
            raise InvalidRequestError("ip_scale", "only applies with an ip_image", value=self.ip_scale)
        for name in ("hires_steps", "hires_strength"):
            if getattr(self, name) is not None and self.hires_scale is None:
                raise InvalidRequestError(name, "only applies with hires_scale (hires fix)", value=getattr(self, name))
        if self.hires_scale is not None and (self.init_image is not None or self.control_image is not None):
            raise InvalidRequestError("hires_scale", "hires fix applies to text-to-image only", value=self.hires_scale)
        return self

    def with_recipe(self, recipe: Recipe) -> Self:
        """A copy of this request that carries ``recipe`` itself, so the engine uses it instead of looking the name
        up in the shared recipes (how a user's private recipe reaches the engine). ``recipe.name`` must be the
        request's ``recipe``; InvalidRequestError otherwise."""
        if recipe.name != self.recipe:
            raise InvalidRequestError("recipe", f"the resolved recipe {recipe.name!r} is not the one the request names",
                                      value=self.recipe)
        copy = self.model_copy()
        copy._resolved_recipe = recipe
        return copy

    def with_base_lora(self, lora: BaseLora | None) -> Self:
        """A copy of this request that also applies ``lora`` (on the model it was trained on; None removes it)."""
        copy = self.model_copy()
        copy._base_lora = lora
        return copy

    @property
    def base_lora(self) -> BaseLora | None:
        """The LoRA given with :meth:`with_base_lora`, or None."""
        return self._base_lora

    @property
    def resolved_recipe(self) -> Recipe | None:
        """The recipe given with :meth:`with_recipe`, or None (the engine then looks ``recipe`` up by name)."""
        return self._resolved_recipe

    def canonical_json(self) -> str:
        """A stable JSON text of every field (sorted keys, images as base64): equal requests give equal text."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def fingerprint(self) -> str:
        """SHA-256 of :meth:`canonical_json`."""
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()

    @property
    def mode(self) -> str:
        """Which pipeline variant this request needs: 'txt2img', 'img2img', 'controlnet' or 'controlnet_img2img'."""
        if self.control_image is not None:
            return "controlnet_img2img" if self.init_image is not None else "controlnet"
        return "img2img" if self.init_image is not None else "txt2img"


_NATIVE_SIZES: dict[tuple[str, str, str], int | None] = {}


def max_side(settings: Settings) -> tuple[int, int] | None:
    """The longest side a request may ask of the served model and that model's native side: the native size times
    ``engine.max_size_multiple`` (down to a multiple of 8, within MIN_SIDE..MAX_SIDE). None when the model's files
    cannot tell its size (MAX_SIDE and ``engine.max_pixels`` still apply). Read once per model."""
    engine = settings.engine
    key = (str(engine.model), str(settings.models_dir), str(engine.model_config_dir))
    if key not in _NATIVE_SIZES:
        from imageloop.engine.model_files import native_size  # imported when limits are first checked

        _NATIVE_SIZES[key] = native_size(engine.model, settings)
    native = _NATIVE_SIZES[key]
    if native is None:
        return None
    return max(MIN_SIDE, min(MAX_SIDE, int(native * engine.max_size_multiple) // 8 * 8)), native


def check_limits(request: GenerationRequest, settings: Settings) -> None:
    """Check the limits that come from settings (steps, pixels, batch size, the pixels of an init, control or
    reference image); InvalidRequestError names the field."""
    limits = settings.engine
    for name, image in (("init_image", request.init_image), ("control_image", request.control_image),
                        ("ip_image", request.ip_image)):
        if image is not None:
            check_image_pixels(image, name, settings.server.max_image_pixels)
    if request.steps is not None and request.steps > limits.max_steps:
        raise InvalidRequestError("steps", f"{request.steps} is too many", value=request.steps,
                                  allowed=f"1..{limits.max_steps}")
    if request.num_images > limits.max_images:
        raise InvalidRequestError("num_images", f"{request.num_images} is too many", value=request.num_images,
                                  allowed=f"1..{limits.max_images}")
    side = max_side(settings)
    if side is not None:
        longest, native = side
        allowed = (f"<= {longest} (the model's native size {native} x engine.max_size_multiple "
                   f"{limits.max_size_multiple:g})")
        for name in ("width", "height"):
            value = getattr(request, name)
            if value is not None and value > longest:
                raise InvalidRequestError(name, f"{value} is too large for this model", value=value, allowed=allowed)
        if request.hires_scale is not None and request.width is not None and request.height is not None:
            upscaled = hires_size(request.width, request.height, request.hires_scale)
            if max(upscaled) > longest:
                raise InvalidRequestError(
                    "hires_scale", f"{request.width}x{request.height} upscaled {request.hires_scale:g}x is "
                    f"{upscaled[0]}x{upscaled[1]}, too large for this model", value=request.hires_scale,
                    allowed=allowed)
    if request.width is not None and request.height is not None and request.width * request.height > limits.max_pixels:
        raise InvalidRequestError(
            "width", f"{request.width}x{request.height} is too large", allowed=f"width*height <= {limits.max_pixels}"
        )
    if request.hires_scale is not None and request.width is not None and request.height is not None:
        width, height = hires_size(request.width, request.height, request.hires_scale)
        if width * height > limits.max_pixels or max(width, height) > MAX_SIDE:
            raise InvalidRequestError(
                "hires_scale", f"{request.width}x{request.height} upscaled {request.hires_scale:g}x is "
                f"{width}x{height}, too large", value=request.hires_scale,
                allowed=f"width*height <= {limits.max_pixels}, sides <= {MAX_SIDE}")


_FIELD_ALIASES = {"model_type": "request", "dict_type": "request"}


def invalid_request_from(exc: ValidationError) -> InvalidRequestError:
    """Turn pydantic's first error into an InvalidRequestError naming the field and what is allowed."""
    error = exc.errors(include_url=False)[0]
    location = [str(part) for part in error["loc"]]
    field = location[0] if location else _FIELD_ALIASES.get(error["type"], "request")
    context = error.get("ctx") or {}
    bounds = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<", "multiple_of": "a multiple of",
              "max_length": "length <=", "min_length": "length >="}
    allowed = ", ".join(f"{text} {context[key]}" for key, text in bounds.items() if key in context) or None
    message = str(error["msg"])
    kinds = {"int": "an integer", "float": "a number", "string": "text", "bytes": "image bytes or base64 text",
             "missing": "a value (this field is required)", "bool": "true or false"}
    if allowed is None:
        allowed = next((text for prefix, text in kinds.items() if str(error["type"]).startswith(prefix)), None)
    if error["type"] == "extra_forbidden":
        message = "is not a request field"
        allowed = ", ".join(GenerationRequest.model_fields)
    elif field in {"width", "height"} and not allowed:
        allowed = f"a multiple of 8 in {MIN_SIDE}..{MAX_SIDE}"
    return InvalidRequestError(field, message, value=error.get("input"), allowed=allowed)
