"""Generation parameters pasted from AUTOMATIC1111, Forge or Civitai, read into a request with the same settings.

A1111 calls the ``parameters`` text an *infotext*. :func:`import_parameters` reads it as A1111 1.6–1.10 and Forge
write it (see :mod:`imageloop.engine.pngmeta` for the layout) and follows every setting diffusers can:

- ``<lora:name:weight>`` tags in the prompt become the request's LoRAs, resolved against the LoRA library
  (``settings.loras_dir``); a missing one is an :class:`~imageloop.errors.InvalidRequestError` naming it. The tags are
  removed from the prompt text.
- Textual-inversion embeddings are used by name from the prompt (see :mod:`imageloop.engine.embeddings`); each
  one ``TI hashes`` lists that is not in ``settings.embeddings_dir`` is reported.
- ``Sampler`` with ``Schedule type`` (A1111 1.9+ and Forge write them apart) map to our sampler names, the nearest
  where diffusers lacks the exact one (``DPM++ 2S a``); a sampler diffusers has no form of (``Restart``) is
  reported and the model's default is used.
- ``Clip skip``; hires fix (``Hires upscale``, ``Hires steps``, ``Denoising strength``) as a second img2img pass.
- For a FLUX.1 or SD3 model (``family``): Forge's ``Distilled CFG Scale`` is FLUX.1's guidance; a negative prompt
  (FLUX.1 has none), a sampler other than Euler and ``Clip skip`` are reported and left out.

Everything else that is a setting is reported by name in :attr:`ImportedParameters.ignored`, never dropped
silently. Fields that only describe the run (``Version``, ``Lora hashes``, Civitai's ``Hashes``...) are not
settings and are not reported.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imageloop.config import Settings
from imageloop.engine.embeddings import embedding_files
from imageloop.engine.families import (
    FLOW_SCHEDULERS,
    NEGATIVE_NOT_USED,
    is_flow_family,
)
from imageloop.engine.pngmeta import PromptTag, prompt_tags, split_parameters
from imageloop.engine.recipes import LORA_SUFFIX, MAX_LORA_WEIGHT, LoraWeight, resolve_lora_path
from imageloop.engine.request import MAX_CLIP_SKIP, MAX_HIRES_SCALE, GenerationRequest
from imageloop.engine.schedulers import sampler_with_schedule
from imageloop.errors import InvalidRequestError, RecipeError, UnknownNameError

_SIZE_RE = re.compile(r"^\s*(\d+)\s*x\s*(\d+)\s*$")
# Fields that say what the run was or used, not how to run it: nothing to honour, nothing to report.
DESCRIPTIVE_FIELDS = frozenset({
    "Version", "Lora hashes", "TI hashes", "Hashes", "Model hash", "Model", "Autocast", "Template",
    "Negative Template", "Civitai resources", "Civitai metadata", "Pad conds", "Hires upscaler", "Created Date",
    "Request negative prompt", "Style negative prompt",  # our PNGs: what the model did not use
})
# Settings whose value here is what we do anyway.
_DEFAULT_VALUES = {"Hires sampler": "Use same sampler", "Hires schedule type": "Use same scheduler",
                   "Hires checkpoint": "Use same checkpoint", "Emphasis": "Original"}


@dataclass(frozen=True)
class IgnoredSetting:
    """A setting of the pasted text that was not honoured (or only approximately): its name, value and why."""

    name: str
    value: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name}: {self.value} — {self.reason}"


@dataclass(frozen=True)
class ImportedParameters:
    """A request with the pasted settings, the model the text names, and every setting not honoured."""

    request: GenerationRequest
    model_name: str | None = None
    model_hash: str | None = None
    ignored: list[IgnoredSetting] = field(default_factory=list)
    embeddings: list[str] = field(default_factory=list)  # TI hashes names found in the embeddings folder


def import_parameters(
    text: str, settings: Settings, *, model_name: str | None = None, model_hash: str | None = None,
    family: str | None = None,
) -> ImportedParameters:
    """Read pasted A1111/Forge/Civitai ``parameters`` text into a request (see the module docstring).

    ``model_name``/``model_hash`` are the model that will run it: when the text names another one, that is reported.
    ``family`` is that model's architecture ("flux", "sd3", ...): what the family cannot take is reported;
    Raises InvalidRequestError (field ``lora``) naming a ``<lora:...>`` LoRA missing from the library (and listing
    the library), or naming a malformed value.
    """
    prompt, negative, values = split_parameters(text)
    reader = _Reader(values)
    prompt, tags = prompt_tags(prompt)
    negative, negative_tags = prompt_tags(negative)
    fields: dict[str, Any] = {"prompt": prompt, "negative_prompt": negative}
    fields["loras"] = _loras(tags, settings, reader.ignored, _named_hashes(values.get("Lora hashes", "")))
    for tag in negative_tags:
        reader.ignore(f"<{tag.kind}:{tag.name}>", tag.text, "an extra-network tag in the negative prompt has no effect "
                      "in A1111 either; removed")
    reader.number(fields, "Steps", "steps", int)
    reader.number(fields, "CFG scale", "guidance_scale", float)
    reader.number(fields, "Seed", "seed", int)
    _size(reader, fields)
    _sampler(reader, fields)
    reader.number(fields, "Clip skip", "clip_skip", int)
    if fields.get("clip_skip") is not None and not 1 <= fields["clip_skip"] <= MAX_CLIP_SKIP:
        reader.ignore("Clip skip", str(fields.pop("clip_skip")), f"outside 1..{MAX_CLIP_SKIP}")
    _hires(reader, fields)
    if family is not None and is_flow_family(family):
        _fit_flow_family(reader, fields, family)
    embeddings = _embeddings(reader, settings)
    for name in ("Recipe", "Style"):  # our own PNGs
        if name in reader.values:
            fields[name.lower()] = reader.take(name)
    text_model, text_hash = values.get("Model"), values.get("Model hash")
    if (model_name is not None or model_hash is not None) and (text_model or text_hash):
        same = (text_model is not None and text_model == model_name) or (
            text_hash is not None and model_hash is not None and model_hash.startswith(text_hash.lower()))
        if not same:
            reader.ignore("Model", text_model or text_hash or "", f"generated with the loaded model {model_name!r} "
                          "instead")
    for name, value in reader.values.items():
        if name in reader.used or name in DESCRIPTIVE_FIELDS:
            continue
        if _DEFAULT_VALUES.get(name) == value:
            continue
        reason = "the control image is not part of the text" if name == "ControlNet weight" else \
            "the reference image is not part of the text" if name.startswith("IP-Adapter") else "not supported here"
        reader.ignore(name, value, reason)
    request = GenerationRequest(**fields)
    return ImportedParameters(request, text_model, text_hash, reader.ignored, embeddings)


class _Reader:
    """The settings line's values, which of them were used, and the ignored list being built."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.used: set[str] = set()
        self.ignored: list[IgnoredSetting] = []

    def take(self, name: str) -> str:
        self.used.add(name)
        return self.values[name]

    def ignore(self, name: str, value: str, reason: str) -> None:
        self.used.add(name)
        self.ignored.append(IgnoredSetting(name, value, reason))

    def number(self, fields: dict[str, Any], name: str, key: str, kind: type[int] | type[float]) -> None:
        if name not in self.values:
            return
        value = self.take(name)
        try:
            fields[key] = kind(value)
        except ValueError:
            raise InvalidRequestError(name, f"cannot read {value!r} as a number", value=value) from None


def _fit_flow_family(reader: _Reader, fields: dict[str, Any], family: str) -> None:
    """Forge's FLUX.1 fields, and what a FLUX.1/SD3 model cannot take reported and left out (see families)."""
    if family == "flux" and "Distilled CFG Scale" in reader.values:
        cfg = fields.pop("guidance_scale", None)
        reader.number(fields, "Distilled CFG Scale", "guidance_scale", float)
        if cfg not in (None, 1.0):
            reader.ignore("CFG scale", f"{cfg:g}", "FLUX.1 runs no classifier-free guidance; its guidance is the "
                          "Distilled CFG Scale")
    if family == "flux" and fields.get("negative_prompt"):
        reader.ignore("Negative prompt", fields.pop("negative_prompt"), NEGATIVE_NOT_USED)
    scheduler = fields.get("scheduler")
    if scheduler is not None and scheduler not in FLOW_SCHEDULERS:
        reader.ignore("Sampler", fields.pop("scheduler"), f"{family} models denoise with flow-matching Euler; "
                      "Euler was used")
    if fields.get("clip_skip") is not None:
        reader.ignore("Clip skip", str(fields.pop("clip_skip")), f"does not apply to {family} models")


def _named_hashes(text: str) -> dict[str, str]:
    """``"name: hash, other: hash"`` (A1111's ``Lora hashes``) as {name: hash}."""
    pairs = (part.rsplit(":", 1) for part in text.split(",") if ":" in part)
    return {name.strip(): digest.strip().lower() for name, digest in pairs if digest.strip()}


def addnet_hash(path: Path) -> str:
    """A1111's hash of a LoRA ``.safetensors`` file (kohya's "addnet" hash): SHA-256 of everything after the header,
    so editing the metadata keeps it. ``Lora hashes`` lists its first 12 hex digits."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as file:
            header = int.from_bytes(file.read(8), "little")
            if 8 + header > path.stat().st_size:
                return ""  # not a safetensors file: matches no hash
            file.seek(8 + header)
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return ""
    return digest.hexdigest()


def _loras(
    tags: list[PromptTag], settings: Settings, ignored: list[IgnoredSetting], hashes: dict[str, str]
) -> list[LoraWeight]:
    weights: dict[str, float] = {}
    for tag in tags:
        if tag.kind == "hypernet":
            ignored.append(IgnoredSetting(f"<hypernet:{tag.name}>", tag.text, "hypernetworks are not supported; "
                                          "removed from the prompt"))
            continue
        numbers = [n for n in tag.numbers if n]
        try:
            weight = float(numbers[0]) if numbers else 1.0
            unet = float(numbers[1]) if len(numbers) > 1 and "=" not in numbers[1] else weight
        except ValueError:
            raise InvalidRequestError("prompt", f"cannot read the weight of {tag.text}", value=tag.text) from None
        if unet != weight:
            ignored.append(IgnoredSetting(f"<{tag.kind}:{tag.name}>", tag.text, f"separate text-encoder and UNet "
                                          f"weights are not supported; {weight:g} was used for both"))
        if not -MAX_LORA_WEIGHT <= weight <= MAX_LORA_WEIGHT:
            raise InvalidRequestError("prompt", f"{tag.text}: weight {weight:g} is out of range", value=tag.text,
                                      allowed=f"-{MAX_LORA_WEIGHT:g}..{MAX_LORA_WEIGHT:g}")
        file = _library_lora(tag, settings, hashes.get(tag.name), ignored)
        weights[file] = weights.get(file, 0.0) + weight
    return [LoraWeight(file=file, weight=weight) for file, weight in weights.items()]


def _library_lora(tag: PromptTag, settings: Settings, short_hash: str | None, ignored: list[IgnoredSetting]) -> str:
    """The library file name of a tag's LoRA: by name, else (a file renamed since) by the hash ``Lora hashes`` gives
    it; InvalidRequestError naming it (and listing the library) if neither finds it."""
    name = tag.name
    if ".." in re.split(r"[\\/]", name) or name.startswith(("/", "\\")):
        raise InvalidRequestError("prompt", f"{tag.text}: a LoRA name may not leave the LoRA library", value=name)
    try:
        resolve_lora_path(name, settings.loras_dir)
        return name
    except RecipeError:
        pass
    # A1111 names a LoRA by file name without folders; the library may keep it in a sub-folder.
    found = sorted(settings.loras_dir.rglob(f"{name}{LORA_SUFFIX}")) if settings.loras_dir.is_dir() else []
    if found:
        return str(found[0].relative_to(settings.loras_dir))
    files = sorted(settings.loras_dir.rglob(f"*{LORA_SUFFIX}")) if settings.loras_dir.is_dir() else []
    if short_hash:
        for path in files:
            digest = addnet_hash(path)
            if digest and digest.startswith(short_hash):
                file = path.relative_to(settings.loras_dir).as_posix()
                ignored.append(IgnoredSetting(f"<{tag.kind}:{name}>", tag.text, f"no LoRA of that name; the library's "
                                              f"{file} has its hash ({short_hash}) and was used"))
                return file.removesuffix(LORA_SUFFIX)
    library = sorted(p.relative_to(settings.loras_dir).as_posix().removesuffix(LORA_SUFFIX) for p in files)
    raise InvalidRequestError("lora", f"{tag.text} in the prompt names LoRA {name!r}, which is not in the LoRA "
                              "library (loras/)", value=name,
                              allowed=", ".join(library) or "none: the library is empty")


def _size(reader: _Reader, fields: dict[str, Any]) -> None:
    if "Size" not in reader.values:
        return
    value = reader.take("Size")
    match = _SIZE_RE.match(value)
    if match is None:
        raise InvalidRequestError("Size", f"cannot read size {value!r}", value=value, allowed="WIDTHxHEIGHT")
    fields["width"], fields["height"] = int(match[1]), int(match[2])


def _sampler(reader: _Reader, fields: dict[str, Any]) -> None:
    if "Sampler" not in reader.values:
        if "Schedule type" in reader.values:
            reader.ignore("Schedule type", reader.values["Schedule type"], "no Sampler is given to apply it to")
        return
    sampler = reader.take("Sampler")
    schedule = reader.take("Schedule type") if "Schedule type" in reader.values else None
    try:
        fields["scheduler"], note = sampler_with_schedule(sampler, schedule)
    except UnknownNameError:
        reader.ignore("Sampler", sampler, "diffusers has no such sampler; the model's default sampler was used")
        if schedule:
            reader.ignore("Schedule type", schedule, "its sampler is not available")
        return
    if note is not None:
        name, value = ("Schedule type", schedule) if schedule and "schedule" in note.lower() else ("Sampler", sampler)
        reader.ignore(name, value or "", f"approximated: {note} (ran as {fields['scheduler']})")


def _hires(reader: _Reader, fields: dict[str, Any]) -> None:
    values = reader.values
    scale: float | None = None
    if "Hires upscale" in values:
        value = reader.take("Hires upscale")
        try:
            scale = float(value)
        except ValueError:
            raise InvalidRequestError("Hires upscale", f"cannot read {value!r} as a number", value=value) from None
    if "Hires resize" in values:
        resize = reader.take("Hires resize")
        match = _SIZE_RE.match(resize)
        width, height = fields.get("width"), fields.get("height")
        if match and width and height and abs(int(match[1]) / width - int(match[2]) / height) < 0.01:
            scale = int(match[1]) / width
        else:
            reader.ignore("Hires resize", resize, "only a resize that keeps the aspect ratio is supported; "
                          + ("the Hires upscale factor was used" if scale else "hires fix skipped"))
    strength = values.get("Denoising strength")
    if scale is None:
        if strength is not None:
            reader.ignore("Denoising strength", reader.take("Denoising strength"), "an img2img setting; the source "
                          "image is not part of the text")
        return
    if not 1.0 < scale <= MAX_HIRES_SCALE:
        reader.ignore("Hires upscale", f"{scale:g}", f"hires fix needs a factor in (1, {MAX_HIRES_SCALE:g}]; skipped")
        return
    fields["hires_scale"] = round(scale, 4)
    if "Hires steps" in values:
        steps = reader.take("Hires steps")
        if steps.strip() not in {"", "0"}:  # 0 = as many as the first pass
            reader.number(fields, "Hires steps", "hires_steps", int)
    if strength is not None:
        reader.number(fields, "Denoising strength", "hires_strength", float)
    upscaler = values.get("Hires upscaler")
    if upscaler is not None:
        how = "latent space" if upscaler.lower().startswith("latent") else f"the {upscaler} model"
        reader.ignore("Hires upscaler", upscaler, f"approximated: upscaled in pixel space (Lanczos), not with {how}")
    for name, value in values.items():
        if name.startswith("Hires ") and name not in reader.used and _DEFAULT_VALUES.get(name) != value:
            reader.ignore(name, value, "hires fix uses the first pass's setting")


def _embeddings(reader: _Reader, settings: Settings) -> list[str]:
    if "TI hashes" not in reader.values:
        return []
    listed = [part.split(":", 1)[0].strip() for part in reader.take("TI hashes").split(",") if part.strip()]
    files = embedding_files(settings.embeddings_dir)
    found = []
    for name in listed:
        if name.lower() in files:
            found.append(name)
        else:
            reader.ignore("TI hashes", name, f"no embedding {name!r} in the embeddings folder (embeddings/); the word "
                          "stays plain text")
    return found
