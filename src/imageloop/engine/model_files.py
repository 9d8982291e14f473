"""What a model is, read from its files without loading a weight: where model ``spec`` lives (``"embedded"``, a name
under the data dir's ``models/``, or a path), its architecture (a diffusers folder's ``model_index.json``, a single
file's key names), the SHA-256 that names its version, its own defaults (``imageloop.json``), its native size and
whether its UNet is guidance-embedded.
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from imageloop.config import ASSETS_DIR, EMBEDDED_MODELS, Settings
from imageloop.engine.conditioning import PromptWeighting
from imageloop.engine.families import config_embeds_guidance, native_side_from_configs
from imageloop.engine.model_knowledge import KNOWS_FILE
from imageloop.engine.schedulers import canonical_scheduler_name
from imageloop.errors import ImageloopError, ModelLoadError, UnsupportedModelError

MODEL_DEFAULTS_FILE = "imageloop.json"
MAX_TIMESTEP = 999  # diffusers models are trained on 1,000 timesteps
_NOT_WEIGHTS = frozenset((MODEL_DEFAULTS_FILE, KNOWS_FILE))
SHIPPED_CONFIGS_DIR = ASSETS_DIR / "configs"

_SD15_KEYS = ("model.diffusion_model.input_blocks.0.0.weight", "cond_stage_model.transformer.")
_SDXL_KEYS = ("model.diffusion_model.label_emb.0.0.weight", "conditioner.embedders.1.model.")
# Transformer checkpoints: original layouts (optionally under ComfyUI's "model.diffusion_model." prefix) and diffusers'.
_ORIGINAL_PREFIXES = ("", "model.diffusion_model.")
_FLUX_ORIGINAL = "double_blocks.0.img_attn.qkv.weight"
_SD3_ORIGINAL = "joint_blocks.0.x_block.attn.qkv.weight"
_FLUX_DIFFUSERS = ("single_transformer_blocks.0.attn.to_q.weight", "x_embedder.weight")
_SD3_DIFFUSERS = ("transformer_blocks.0.attn.add_k_proj.weight", "pos_embed.proj.weight")


class Architecture(StrEnum):
    """Model families the engine runs."""

    SD15 = "sd15"
    SDXL = "sdxl"
    FLUX = "flux"
    SD3 = "sd3"


# Folder pipelines we accept, by the class name in model_index.json.
_FOLDER_CLASSES = {
    "StableDiffusionPipeline": Architecture.SD15,
    "StableDiffusionImg2ImgPipeline": Architecture.SD15,
    "StableDiffusionXLPipeline": Architecture.SDXL,
    "StableDiffusionXLImg2ImgPipeline": Architecture.SDXL,
    "FluxPipeline": Architecture.FLUX,
    "FluxImg2ImgPipeline": Architecture.FLUX,
    "StableDiffusion3Pipeline": Architecture.SD3,
    "StableDiffusion3Img2ImgPipeline": Architecture.SD3,
}


class ModelDefaults(BaseModel):
    """A model's preferred settings, from the optional ``imageloop.json`` beside ``model_index.json``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    steps: int | None = Field(default=None, ge=1, le=1000)
    guidance_scale: float | None = Field(default=None, ge=0.0, le=30.0)
    width: int | None = Field(default=None, ge=64, le=4096, multiple_of=8)
    height: int | None = Field(default=None, ge=64, le=4096, multiple_of=8)
    scheduler: str | None = None
    prompt_weighting: PromptWeighting | None = Field(
        default=None, description="How (word:1.2) weights act: 'a1111' (the default) or 'context' (see conditioning)."
    )
    timesteps: list[int] | None = Field(
        default=None, min_length=1, max_length=1000,
        description="The sampler's own timesteps for the default steps and scheduler (a few-step model's schedule, "
                    "as diffusers' custom timesteps): strictly decreasing, each in [0, 999], one per step.",
    )

    @model_validator(mode="after")
    def _timesteps_fit(self) -> ModelDefaults:
        if self.timesteps is None:
            return self
        if any(not 0 <= t <= MAX_TIMESTEP for t in self.timesteps):
            raise ValueError(f"timesteps must each be in [0, {MAX_TIMESTEP}]")
        if any(later >= earlier for earlier, later in zip(self.timesteps, self.timesteps[1:], strict=False)):
            raise ValueError("timesteps must be strictly decreasing")
        return self  # one per default step: checked against the resolved steps (loader.complete_defaults)


def shipped_config_dir(architecture: Architecture) -> Path:
    """The diffusers config folder we ship for single-file checkpoints of ``architecture``."""
    return SHIPPED_CONFIGS_DIR / architecture.value


def resolve_model_source(spec: str | Path, settings: Settings) -> Path:
    """Where model ``spec`` lives: 'embedded', a folder/file name under ``settings.models_dir``, or a path."""
    text = str(spec)
    if text in EMBEDDED_MODELS:
        folder = EMBEDDED_MODELS[text]
        if not (folder / "model_index.json").is_file():
            raise ModelLoadError(
                f"the {text} model is not installed ({folder} has no model_index.json); "
                "pass --model PATH (a diffusers folder or a .safetensors checkpoint) or set IMAGELOOP_ENGINE__MODEL"
            )
        return folder
    path = Path(text).expanduser()
    if not path.exists() and not path.is_absolute() and (settings.models_dir / text).exists():
        path = settings.models_dir / text
    if not path.exists():
        raise ModelLoadError(f"model {text!r} not found: {path} does not exist (and no such name in "
                             f"{settings.models_dir})")
    return path.resolve()


def read_checkpoint_keys(path: Path) -> list[str]:
    """Tensor names in a ``.safetensors`` file; ModelLoadError if the file is empty, not safetensors, or corrupt."""
    if path.suffix.lower() in {".ckpt", ".pt", ".pth", ".bin"}:
        raise UnsupportedModelError(
            f"{path}: pickle checkpoints ({path.suffix}) are not loaded because they can run code; "
            "convert it to .safetensors"
        )
    size = path.stat().st_size
    if size == 0:
        raise ModelLoadError(f"{path}: the file is empty")
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = list(handle.keys())
    except Exception as exc:  # safetensors raises its own error type for every header problem
        raise ModelLoadError(f"{path}: not a readable .safetensors file ({exc})") from None
    if not keys:
        raise UnsupportedModelError(f"{path}: the .safetensors file holds no tensors")
    return keys


def architecture_from_keys(keys: list[str], path: Path) -> Architecture:
    """The architecture from a checkpoint's key names: SD1.5/SDXL from their original (LDM) keys, FLUX.1/SD3 from
    their transformer's original or diffusers keys; UnsupportedModelError says what else it looks like."""
    key_set = set(keys)

    def has(marker: str) -> bool:
        return marker in key_set or any(k.startswith(marker) for k in keys)

    if all(has(marker) for marker in _SDXL_KEYS):
        return Architecture.SDXL
    if all(has(marker) for marker in _SD15_KEYS):
        return Architecture.SD15
    if any(prefix + _FLUX_ORIGINAL in key_set for prefix in _ORIGINAL_PREFIXES) or key_set.issuperset(_FLUX_DIFFUSERS):
        return Architecture.FLUX
    if any(prefix + _SD3_ORIGINAL in key_set for prefix in _ORIGINAL_PREFIXES) or (
        key_set.issuperset(_SD3_DIFFUSERS) and not has("single_transformer_blocks.")
    ):
        return Architecture.SD3
    if has("cond_stage_model.model."):
        kind = "a Stable Diffusion 2.x checkpoint (OpenCLIP text encoder)"
    elif any(k.startswith(("lora_unet_", "lora_te", "unet.", "text_encoder.")) or ".lora_" in k for k in keys):
        kind = "a LoRA (add it to a recipe instead)"
    elif has("model.diffusion_model."):
        kind = "a diffusion model without the SD1.5/SDXL text encoders"
    elif has("encoder.down.") or has("decoder.up."):
        kind = "a VAE on its own"
    else:
        kind = f"not a Stable Diffusion checkpoint (first keys: {', '.join(sorted(keys)[:3])})"
    raise UnsupportedModelError(f"{path}: unsupported model: {kind}; supported: SD1.5, SDXL, FLUX.1 and SD3 "
                                f"checkpoints")


def detect_architecture(path: Path) -> Architecture:
    """The architecture of a diffusers folder (from ``model_index.json``) or a single-file checkpoint."""
    if path.is_dir():
        index = path / "model_index.json"
        if not index.is_file():
            raise ModelLoadError(f"{path}: not a diffusers pipeline folder (no model_index.json)")
        try:
            class_name = json.loads(index.read_text(encoding="utf-8")).get("_class_name")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
            raise ModelLoadError(f"{index}: not valid JSON ({exc})") from None
        if class_name not in _FOLDER_CLASSES:
            raise UnsupportedModelError(
                f"{path}: unsupported pipeline {class_name!r}; supported: {', '.join(sorted(_FOLDER_CLASSES))}"
            )
        return _FOLDER_CLASSES[class_name]
    return architecture_from_keys(read_checkpoint_keys(path), path)


def content_hash(path: Path) -> str:
    """SHA-256 of a file, or of a folder's files (relative names and bytes, sorted; ``imageloop.json`` and
    ``knows.json`` excluded: settings and a description, not weights), plus the model's own ``timesteps`` when its
    ``imageloop.json`` has them: they change every image made with the default steps, and no request records them."""
    digest = hashlib.sha256()
    if path.is_dir() and (path / MODEL_DEFAULTS_FILE).is_file():
        timesteps = read_model_defaults(path).timesteps
        if timesteps:
            digest.update(b"timesteps:" + ",".join(map(str, timesteps)).encode("ascii") + b"\0")
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.is_file() and p.name not in _NOT_WEIGHTS and not p.name.startswith(".")
    )
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode("utf-8") + b"\0")
        with file.open("rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def read_model_defaults(folder: Path) -> ModelDefaults:
    """The ``imageloop.json`` of a model folder (empty defaults when absent); ModelLoadError names a bad field."""
    file = folder / MODEL_DEFAULTS_FILE
    if not file.is_file():
        return ModelDefaults()
    try:
        defaults = ModelDefaults.model_validate_json(file.read_text(encoding="utf-8"))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in exc.errors())
        raise ModelLoadError(f"{file}: invalid model defaults: {problems}") from None
    if defaults.scheduler is not None:
        try:
            canonical_scheduler_name(defaults.scheduler)
        except ImageloopError as exc:
            raise ModelLoadError(f"{file}: {exc.message}") from None
    return defaults


def model_family(spec: str | Path, settings: Settings) -> str | None:
    """The architecture of model ``spec`` ("sd15", "sdxl", "flux", "sd3") from its files, without loading any
    weight; None when it cannot be found or read (loading it then says why)."""
    try:
        return detect_architecture(resolve_model_source(spec, settings)).value
    except ImageloopError:
        return None


def folder_embeds_guidance(path: Path) -> bool:
    """Whether a diffusers folder's UNet takes the guidance as an embedding (``time_cond_proj_dim`` in
    ``unet/config.json``: LCM-distilled), read without loading it. False for a single file (it loads with the shipped
    SD config, which has none), a folder without a UNet, or a config that cannot be read (loading then says why)."""
    config = path / "unet" / "config.json"
    if not config.is_file():
        return False
    try:
        values = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(values, dict) and config_embeds_guidance(values)


def native_size(spec: str | Path, settings: Settings) -> int | None:
    """The longer side, in pixels, that model ``spec`` makes by default, read from its config files without loading
    any weight: its ``imageloop.json`` size, else the UNet's ``sample_size`` times the VAE's scale factor (the
    shipped configs stand in for a single-file checkpoint). None when the files cannot tell."""
    try:
        path = resolve_model_source(spec, settings)
        folder = path if path.is_dir() else (settings.engine.model_config_dir
                                             or shipped_config_dir(detect_architecture(path)))
        own = read_model_defaults(folder)
        if own.width or own.height:
            return max(own.width or 0, own.height or 0)
        vae = json.loads((folder / "vae" / "config.json").read_text(encoding="utf-8"))
        if not (folder / "unet").is_dir():  # a FLUX.1 / SD3 transformer
            transformer = json.loads((folder / "transformer" / "config.json").read_text(encoding="utf-8"))
            return native_side_from_configs(detect_architecture(folder).value, transformer, vae)
        unet = json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
        sample = unet["sample_size"]
        latent = max(sample) if isinstance(sample, list) else int(sample)
        return int(latent * 2 ** (len(vae["block_out_channels"]) - 1))  # as diffusers' vae_scale_factor
    except (ImageloopError, OSError, ValueError, KeyError, TypeError):
        return None
