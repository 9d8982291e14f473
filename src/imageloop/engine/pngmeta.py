"""Generation parameters in PNG text chunks, in AUTOMATIC1111's ``parameters`` format.

The format is three parts, as A1111 writes it::

    a cat in the rain, monochrome
    Negative prompt: blurry
    Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, Model hash: 0123456789, Model: embedded

Values holding a comma, colon or newline are JSON-quoted. A PNG written here can be read back with
:func:`read_png_parameters` into a request that reproduces that one image (``num_images`` 1, that image's seed).
Source images (img2img, ControlNet, the IP-Adapter's reference) are not stored in the text (the reference
image's SHA-256 prefix, its scale and the adapter's name are), so a read-back request has none. A request's own
LoRAs are written into the prompt as A1111's ``<lora:name:weight>`` tags and read back from them; clip skip and
hires fix as A1111's ``Clip skip``, ``Hires upscale``, ``Hires steps`` and ``Denoising strength``.

Text pasted from A1111, Forge or Civitai, with everything we cannot follow reported by name, is read by
:mod:`imageloop.engine.infotext`.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from imageloop.engine.recipes import LORA_SUFFIX, LoraWeight
from imageloop.engine.request import GenerationRequest
from imageloop.engine.schedulers import sampler_with_schedule
from imageloop.errors import InvalidRequestError

PARAMETERS_KEY = "parameters"
_NEGATIVE_PREFIX = "Negative prompt:"
# One "Key: value" pair of the last line, as A1111 reads it: a value is either JSON-quoted or runs to the next comma.
_PARAM_RE = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
# Civitai writes JSON arrays and objects unquoted ("Civitai resources: [{...}, {...}]", "Hashes: {...}").
_JSON_VALUE_RE = re.compile(r'(?:^|,)\s*(\w[\w \-/]+):\s*(?=[\[{])')
_SIZE_RE = re.compile(r"^(\d+)x(\d+)$")
# A1111's extra-network tags in a prompt: <lora:name:weight>, <lora:name:te:unet>, <lyco:...>, <hypernet:...>.
PROMPT_TAG_RE = re.compile(r"<(lora|lyco|hypernet):([^:<>]+)((?::[^:<>]*)*)>", re.IGNORECASE)


@dataclass(frozen=True)
class PromptTag:
    """One extra-network tag of a prompt: its kind (lora, lyco, hypernet), name and the numbers after the name."""

    kind: str
    name: str
    numbers: tuple[str, ...]
    text: str


def prompt_tags(prompt: str, kinds: tuple[str, ...] = ("lora", "lyco", "hypernet")) -> tuple[str, list[PromptTag]]:
    """The prompt without its extra-network tags of ``kinds``, and those tags in order. Where a tag goes, the comma
    and spaces around it go too ("a, <lora:x:1>, b" -> "a, b"); the rest of the text is left as written."""
    matches = [m for m in PROMPT_TAG_RE.finditer(prompt) if m[1].lower() in kinds]
    tags = [PromptTag(m[1].lower(), m[2].strip(), tuple(n.strip() for n in m[3].split(":")[1:]), m[0])
            for m in matches]
    if not tags:
        return prompt, []
    mark = "\x00"
    pieces, last = [], 0
    for match in matches:
        pieces += [prompt[last: match.start()], mark]
        last = match.end()
    marked = "".join(pieces) + prompt[last:]
    text = re.sub(rf"[ \t]*{mark}(?:[ \t]*{mark})*[ \t]*", mark, marked)
    text = text.replace(f",{mark},", ",")  # a tag between two commas
    text = re.sub(rf",?{mark}(?=\n|$)", "", text)  # at the end of a line, with the comma before it
    text = re.sub(rf"(?:^|(?<=\n)){mark},?[ \t]*", "", text)  # at the start of a line, with the comma after it
    return text.replace(mark, " ").strip(), tags


def lora_tag(lora: LoraWeight) -> str:
    """A1111's prompt tag for a LoRA of the library: ``<lora:name:weight>`` (the name without its suffix)."""
    name = lora.file.removesuffix(LORA_SUFFIX)
    return f"<lora:{name}:{lora.weight:g}>"


@dataclass(frozen=True)
class ImageParameters:
    """What one image's ``parameters`` text says: the request for that image plus model identity and extras."""

    request: GenerationRequest
    model_hash: str | None = None
    model_name: str | None = None
    extras: dict[str, str] = field(default_factory=dict)


def _quote(value: str) -> str:
    return json.dumps(value, ensure_ascii=False) if any(c in value for c in ",:\n\"") else value


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            return str(json.loads(value))
        except json.JSONDecodeError:
            return value
    return value


def _number(value: float) -> str:
    return f"{value:g}"


def format_parameters(
    request: GenerationRequest, *, seed: int, model_name: str, model_hash: str, extras: dict[str, str] | None = None
) -> str:
    """The ``parameters`` text for one image of a resolved request, generated with ``seed``."""
    if request.steps is None or request.guidance_scale is None or request.width is None or request.height is None:
        raise ValueError("format_parameters needs a resolved request (steps, guidance_scale, width, height set)")
    pairs: list[tuple[str, str]] = [
        ("Steps", str(request.steps)),
        ("Sampler", request.scheduler or ""),
        ("CFG scale", _number(request.guidance_scale)),
        ("Seed", str(seed)),
        ("Size", f"{request.width}x{request.height}"),
        ("Model hash", model_hash[:10]),
        ("Model", model_name),
    ]
    if request.strength is not None:
        pairs.append(("Denoising strength", _number(request.strength)))
    if request.controlnet_conditioning_scale is not None:
        pairs.append(("ControlNet weight", _number(request.controlnet_conditioning_scale)))
    if request.ip_image is not None:
        pairs.append(("IP-Adapter image", hashlib.sha256(request.ip_image).hexdigest()[:10]))
        if request.ip_scale is not None:
            pairs.append(("IP-Adapter scale", _number(request.ip_scale)))
    if request.clip_skip is not None:
        pairs.append(("Clip skip", str(request.clip_skip)))
    if request.hires_scale is not None:
        pairs.append(("Hires upscale", _number(request.hires_scale)))
        if request.hires_steps is not None:
            pairs.append(("Hires steps", str(request.hires_steps)))
        if request.hires_strength is not None:
            pairs.append(("Denoising strength", _number(request.hires_strength)))
    if request.recipe is not None:
        pairs.append(("Recipe", request.recipe))
    if request.style is not None:
        pairs.append(("Style", request.style))
    pairs.extend((extras or {}).items())
    lines = [" ".join([request.prompt, *(lora_tag(lora) for lora in request.loras)])]
    if request.negative_prompt:
        lines.append(f"{_NEGATIVE_PREFIX} {request.negative_prompt}")
    lines.append(", ".join(f"{key}: {_quote(value)}" for key, value in pairs))
    return "\n".join(lines)


def parse_parameters(text: str) -> ImageParameters:
    """Parse A1111 ``parameters`` text; InvalidRequestError if a value is malformed or out of range.

    Understands A1111's newer split ``Sampler: DPM++ 2M, Schedule type: Karras`` as "DPM++ 2M Karras".
    """
    prompt, negative, values = split_parameters(text)
    return _to_parameters(prompt, negative, values)


def split_parameters(text: str) -> tuple[str, str, dict[str, str]]:
    """The three parts of a ``parameters`` text: prompt, negative prompt and the settings line's values (unquoted),
    each as written; a text without a settings line is all prompt."""
    lines = text.replace("\r\n", "\n").lstrip("\n").rstrip().split("\n")
    last = lines[-1] if lines else ""
    if len(_PARAM_RE.findall(last)) < 3:  # A1111's rule: a settings line has at least three pairs
        lines.append(last)
        last = ""
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    for line in lines[:-1]:
        if line.startswith(_NEGATIVE_PREFIX) or negative_lines:
            negative_lines.append(line.removeprefix(_NEGATIVE_PREFIX).strip() if not negative_lines else line)
        else:
            prompt_lines.append(line)
    values = _settings_values(last)
    return "\n".join(prompt_lines), "\n".join(negative_lines), values


def _settings_values(line: str) -> dict[str, str]:
    """The settings line's "Key: value" pairs, unquoted; an unquoted JSON array or object value (Civitai's) is kept
    whole instead of being cut at its commas."""
    values: dict[str, str] = {}
    rest = line
    while (match := _JSON_VALUE_RE.search(rest)) is not None:
        end = _json_end(rest, match.end())
        if end is None:
            break
        values.update(_plain_values(rest[: match.start()]))
        values[match[1].strip()] = rest[match.end(): end]
        rest = rest[end:]
    values.update(_plain_values(rest))
    return values


def _plain_values(text: str) -> dict[str, str]:
    return {key.strip(): _unquote(value.strip()) for key, value in _PARAM_RE.findall(text)}


def _json_end(text: str, start: int) -> int | None:
    """Where the JSON array/object starting at ``start`` ends (brackets balanced, strings skipped), or None."""
    depth, in_string, escaped = 0, False, False
    for index in range(start, len(text)):
        char = text[index]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
            if depth == 0:
                return index + 1
    return None


def _to_parameters(prompt: str, negative: str, values: dict[str, str]) -> ImageParameters:
    # LoRA (and LyCORIS) tags become the request's LoRAs; anything else stays in the text (infotext reports it).
    prompt, tags = prompt_tags(prompt, kinds=("lora", "lyco"))
    loras = [LoraWeight(file=tag.name, weight=float(tag.numbers[0]) if tag.numbers and tag.numbers[0] else 1.0)
             for tag in tags]
    fields: dict[str, Any] = {"prompt": prompt, "negative_prompt": negative, "loras": loras}
    known = {"Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model hash", "Model",
             "Recipe", "Style", "Denoising strength", "ControlNet weight", "Clip skip", "Hires upscale", "Hires steps"}
    if "Steps" in values:
        fields["steps"] = values["Steps"]
    if "CFG scale" in values:
        fields["guidance_scale"] = values["CFG scale"]
    if "Seed" in values:
        fields["seed"] = values["Seed"]
    if "Sampler" in values:
        fields["scheduler"], _ = sampler_with_schedule(values["Sampler"], values.get("Schedule type"))
    if "Size" in values:
        match = _SIZE_RE.match(values["Size"])
        if match is None:
            raise InvalidRequestError("Size", f"cannot read size {values['Size']!r}", allowed="WIDTHxHEIGHT")
        fields["width"], fields["height"] = int(match[1]), int(match[2])
    if "Recipe" in values:
        fields["recipe"] = values["Recipe"]
    if "Style" in values:
        fields["style"] = values["Style"]
    if "Clip skip" in values:
        fields["clip_skip"] = values["Clip skip"]
    if "Hires upscale" in values:
        fields["hires_scale"] = values["Hires upscale"]
        if values.get("Hires steps", "0") != "0":  # A1111 writes 0 for "as many as the first pass"
            fields["hires_steps"] = values["Hires steps"]
        if "Denoising strength" in values:
            fields["hires_strength"] = values["Denoising strength"]
    request = GenerationRequest(**fields)
    extras = {key: value for key, value in values.items() if key not in known}
    return ImageParameters(request, values.get("Model hash"), values.get("Model"), extras)


def encode_png(image: Image.Image, parameters: str) -> bytes:
    """PNG bytes of ``image`` with ``parameters`` in a text chunk (iTXt when the text is not Latin-1)."""
    info = PngInfo()
    info.add_text(PARAMETERS_KEY, parameters)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def png_parameters_text(png: bytes) -> str:
    """The raw ``parameters`` text of a PNG; InvalidRequestError if it is not a PNG or has none."""
    try:
        with Image.open(io.BytesIO(png)) as image:
            if image.format != "PNG":
                raise InvalidRequestError("png", f"not a PNG image (got {image.format})")
            text = getattr(image, "text", {}).get(PARAMETERS_KEY) or image.info.get(PARAMETERS_KEY)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:  # the header says it is too large
        raise InvalidRequestError("png", f"not a readable image ({exc})") from None
    if not isinstance(text, str):
        raise InvalidRequestError("png", f"has no A1111 '{PARAMETERS_KEY}' text chunk")
    return text


def read_png_image_parameters(png: bytes) -> ImageParameters:
    """Everything the PNG's ``parameters`` chunk says, including model hash/name and unknown extras."""
    return parse_parameters(png_parameters_text(png))


def read_png_parameters(png: bytes) -> GenerationRequest:
    """Read a PNG written by Imageloop (or A1111) back into a request that reproduces that image."""
    return read_png_image_parameters(png).request
