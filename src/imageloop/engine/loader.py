"""Loading models: diffusers folders and single-file ``.safetensors`` checkpoints (SD1.5, SDXL, FLUX.1, SD3).

:func:`load_model` finds the model (``"embedded"``, a name under the data dir's ``models/``, or a path), detects
its architecture, loads the text-to-image pipeline on the configured device, and hashes its weights so results
can name the exact version. A FLUX.1 or SD3 single file holds the transformer (original BFL/SAI keys or diffusers
keys); its text encoders, VAE, tokenizers and scheduler come from a diffusers folder of the same family given as
``config`` (nothing is shipped for them: they are gigabytes). :func:`pipeline_variant` builds the img2img /
ControlNet pipelines from the loaded one with ``from_pipe``, sharing its weights. Every failure is a
:class:`ModelLoadError` (or :class:`UnsupportedModelError`) naming the path and the reason.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from imageloop.config import ASSETS_DIR, EMBEDDED_MODEL_DIR, EMBEDDED_MODEL_NAME, Settings
from imageloop.engine.conditioning import PromptWeighting
from imageloop.engine.families import (
    FLOW_SCHEDULERS,
    check_flow_scheduler,
    family_defaults,
    is_flow_family,
    native_side_from_configs,
)
from imageloop.engine.schedulers import canonical_scheduler_name
from imageloop.engine.transformer_files import left_out_t5, load_transformer_file
from imageloop.errors import ImageloopError, InvalidRequestError, ModelLoadError, UnsupportedModelError

MODEL_DEFAULTS_FILE = "imageloop.json"
SHIPPED_CONFIGS_DIR = ASSETS_DIR / "configs"
FALLBACK_STEPS = 20
FALLBACK_GUIDANCE = 7.0
FALLBACK_SCHEDULER = "DPM++ 2M Karras"

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


class Mode(StrEnum):
    """Pipeline variants; a request's ``mode`` picks one."""

    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"
    CONTROLNET = "controlnet"
    CONTROLNET_IMG2IMG = "controlnet_img2img"


_PIPELINE_CLASSES: dict[Architecture, dict[Mode, str]] = {
    Architecture.SD15: {
        Mode.TXT2IMG: "StableDiffusionPipeline",
        Mode.IMG2IMG: "StableDiffusionImg2ImgPipeline",
        Mode.CONTROLNET: "StableDiffusionControlNetPipeline",
        Mode.CONTROLNET_IMG2IMG: "StableDiffusionControlNetImg2ImgPipeline",
    },
    Architecture.SDXL: {
        Mode.TXT2IMG: "StableDiffusionXLPipeline",
        Mode.IMG2IMG: "StableDiffusionXLImg2ImgPipeline",
        Mode.CONTROLNET: "StableDiffusionXLControlNetPipeline",
        Mode.CONTROLNET_IMG2IMG: "StableDiffusionXLControlNetImg2ImgPipeline",
    },
    Architecture.FLUX: {Mode.TXT2IMG: "FluxPipeline", Mode.IMG2IMG: "FluxImg2ImgPipeline"},
    Architecture.SD3: {Mode.TXT2IMG: "StableDiffusion3Pipeline", Mode.IMG2IMG: "StableDiffusion3Img2ImgPipeline"},
}

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


@dataclass(frozen=True)
class ResolvedDefaults:
    """Complete defaults for a loaded model: its own file's values, else values derived from its config."""

    steps: int
    guidance_scale: float
    width: int
    height: int
    scheduler: str
    prompt_weighting: PromptWeighting = "a1111"


@dataclass
class LoadedModel:
    """A loaded text-to-image pipeline plus what the engine needs to know about it."""

    pipe: Any
    architecture: Architecture
    name: str
    path: Path
    version: str  # SHA-256 of the weights (and configs) on disk
    defaults: ResolvedDefaults
    scheduler_config: dict[str, Any]
    device: torch.device
    dtype: torch.dtype
    variants: dict[Mode, Any] = field(default_factory=dict)

    @property
    def short_hash(self) -> str:
        """The first 10 hex digits of the version, as A1111 shows a model hash."""
        return self.version[:10]

    def require_sd15(self, purpose: str) -> None:
        """UnsupportedModelError unless this is an SD1.x-style model, the only kind ``purpose`` trains."""
        if self.architecture is not Architecture.SD15:
            raise UnsupportedModelError(f"{purpose} needs an SD1.x-style model; {self.name} is "
                                        f"{self.architecture.value}")


def resolve_device(settings: Settings) -> tuple[torch.device, torch.dtype]:
    """The device and dtype from settings: 'auto' means CUDA with fp16 when available, else CPU with fp32."""
    engine = settings.engine
    if engine.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(engine.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("engine.device is 'cuda' but torch sees no CUDA device (CPU-only torch build?)")
    if engine.dtype == "auto":
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    else:
        dtype = getattr(torch, engine.dtype)
    return device, dtype


def resolve_model_source(spec: str | Path, settings: Settings) -> Path:
    """Where model ``spec`` lives: 'embedded', a folder/file name under ``settings.models_dir``, or a path."""
    text = str(spec)
    if text == EMBEDDED_MODEL_NAME:
        if not (EMBEDDED_MODEL_DIR / "model_index.json").is_file():
            raise ModelLoadError(
                f"the embedded model is not installed yet ({EMBEDDED_MODEL_DIR} has no model_index.json); "
                "pass --model PATH (a diffusers folder or a .safetensors checkpoint) or set IMAGELOOP_ENGINE__MODEL"
            )
        return EMBEDDED_MODEL_DIR
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
    """SHA-256 of a file, or of a folder's files (relative names and bytes, sorted; ``imageloop.json`` excluded)."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.is_file() and p.name != MODEL_DEFAULTS_FILE and not p.name.startswith(".")
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


def complete_defaults(
    pipe: Any, own: ModelDefaults, architecture: Architecture = Architecture.SD15
) -> ResolvedDefaults:
    """Fill the gaps of a model's own defaults: native size from its UNet (or transformer) and VAE config; steps
    and guidance: A1111's usual ones, or the family's for FLUX.1 / SD3 (see families)."""
    scheduler = FALLBACK_SCHEDULER
    if is_flow_family(architecture):
        steps, guidance, native = family_defaults(architecture.value, pipe)
        scheduler = FLOW_SCHEDULERS[0]
        if own.scheduler:
            try:
                check_flow_scheduler(canonical_scheduler_name(own.scheduler), architecture.value)
            except ImageloopError as exc:
                raise ModelLoadError(f"{MODEL_DEFAULTS_FILE}: {exc.message}") from None
    else:
        steps, guidance = FALLBACK_STEPS, FALLBACK_GUIDANCE
        native = int(pipe.unet.config.sample_size) * int(getattr(pipe, "vae_scale_factor", 8))
    return ResolvedDefaults(
        steps=own.steps or steps,
        guidance_scale=own.guidance_scale if own.guidance_scale is not None else guidance,
        width=own.width or native,
        height=own.height or native,
        scheduler=canonical_scheduler_name(own.scheduler) if own.scheduler else scheduler,
        prompt_weighting=own.prompt_weighting or "a1111",
    )


@contextmanager
def quiet_loading() -> Iterator[None]:
    # diffusers/transformers print progress bars and advice while loading; the engine reports its own progress.
    import diffusers
    import transformers

    logs: list[Any] = [diffusers.utils.logging, transformers.utils.logging]
    previous = [(log.get_verbosity(), log.is_progress_bar_enabled()) for log in logs]
    for log in logs:
        log.set_verbosity_error()
        log.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for log, (verbosity, bars) in zip(logs, previous, strict=True):
            log.set_verbosity(verbosity)
            if bars:
                log.enable_progress_bar()


def _pipeline_class(architecture: Architecture, mode: Mode) -> Any:
    import diffusers

    name = _PIPELINE_CLASSES[architecture].get(mode)
    if name is None:
        field = "control_image" if mode in (Mode.CONTROLNET, Mode.CONTROLNET_IMG2IMG) else "init_image"
        raise InvalidRequestError(field, f"{mode.value} is not supported for {architecture.value} models",
                                  allowed=", ".join(m.value for m in _PIPELINE_CLASSES[architecture]))
    return getattr(diffusers, name)


def shipped_config_dir(architecture: Architecture) -> Path:
    """The diffusers config folder we ship for single-file checkpoints of ``architecture``."""
    return SHIPPED_CONFIGS_DIR / architecture.value


def single_file_config(path: Path, architecture: Architecture, config: Path | None, settings: Settings) -> Path:
    """The config folder for single-file checkpoint ``path``: ``config`` if given (it must be of the same
    architecture), else the shipped one for ``architecture``, assembled under the data dir's cache."""
    if config is None and is_flow_family(architecture):
        raise ModelLoadError(
            f"{path}: a {architecture.value} single file holds only the transformer; pass --config DIR (or set "
            f"IMAGELOOP_ENGINE__MODEL_CONFIG_DIR): a diffusers {architecture.value} folder with its text encoders, "
            "VAE, tokenizers and scheduler"
        )
    if config is None:
        from imageloop.engine.single_file import prepared_config_dir

        try:
            return prepared_config_dir(shipped_config_dir(architecture), settings.cache_dir / "model-configs")
        except ModelLoadError as exc:
            raise ModelLoadError(f"{path}: {exc.message}") from None
    if not (config / "model_index.json").is_file():
        raise ModelLoadError(
            f"{path}: --config {config} is not a diffusers config folder (no model_index.json); it needs "
            "model_index.json, the component configs and the tokenizer"
        )
    folder_arch = detect_architecture(config)
    if folder_arch != architecture:
        raise ModelLoadError(
            f"{path}: the checkpoint is {architecture.value} but the config folder {config} is {folder_arch.value}"
        )
    return config


def _load_pipeline(path: Path, architecture: Architecture, config: Path | None, dtype: torch.dtype) -> Any:
    # ``config``: for a single file, the complete config folder (see single_file_config).
    cls = _pipeline_class(architecture, Mode.TXT2IMG)
    try:
        with quiet_loading():
            if path.is_dir():
                kwargs: dict[str, Any] = {"torch_dtype": dtype, "local_files_only": True}
                if architecture is Architecture.SD15:
                    kwargs.update(safety_checker=None, requires_safety_checker=False)
                return cls.from_pretrained(path, **kwargs, **left_out_t5(path, architecture.value))
            assert config is not None
            if is_flow_family(architecture):
                return load_transformer_file(path, architecture.value, cls, config, dtype)
            pipe = cls.from_single_file(str(path), config=str(config), torch_dtype=dtype, local_files_only=True)
            _check_all_weights_loaded(pipe, path)
            return pipe
    except ImageloopError:
        raise
    except Exception as exc:  # diffusers raises many types (OSError, ValueError, KeyError...) for bad files
        raise ModelLoadError(f"{path}: cannot load the {architecture.value} model: {error_reason(exc)}") from exc


def error_reason(exc: BaseException) -> str:
    """A one-line reason for a loading failure, in words a user can act on."""
    text = str(exc).strip()
    if "meta tensor" in text:  # what torch says when a module kept weights that the file did not provide
        return "the checkpoint has no weights for some parameters (incomplete file, or a config of another model)"
    return text.splitlines()[0] if text else type(exc).__name__


def _check_all_weights_loaded(pipe: Any, path: Path) -> None:
    # A checkpoint missing some tensors leaves them on the "meta" device; say which instead of failing later.
    for name, component in pipe.components.items():
        if isinstance(component, torch.nn.Module):
            missing = [key for key, value in component.named_parameters() if value.is_meta]
            if missing:
                raise ModelLoadError(
                    f"{path}: the checkpoint has no weights for {len(missing)} {name} parameters "
                    f"(e.g. {missing[0]}); is the config folder for this model?"
                )


def load_model(spec: str | Path, settings: Settings, *, config: Path | None = None) -> LoadedModel:
    """Load model ``spec`` (see :func:`resolve_model_source`) as a text-to-image pipeline on the settings' device.

    ``config`` is the diffusers config folder for a single-file checkpoint (default: the one we ship).
    """
    path = resolve_model_source(spec, settings)
    architecture = detect_architecture(path)
    device, dtype = resolve_device(settings)
    own_defaults = read_model_defaults(path) if path.is_dir() else ModelDefaults()
    folder = single_file_config(path, architecture, config, settings) if path.is_file() else None
    pipe = _load_pipeline(path, architecture, folder, dtype)
    with quiet_loading():
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    name = EMBEDDED_MODEL_NAME if path == EMBEDDED_MODEL_DIR.resolve() else path.stem if path.is_file() else path.name
    logging.getLogger(__name__).info("loaded %s model %s from %s", architecture.value, name, path)
    return LoadedModel(
        pipe=pipe,
        architecture=architecture,
        name=name,
        path=path,
        version=content_hash(path),
        defaults=complete_defaults(pipe, own_defaults, architecture),
        scheduler_config=dict(pipe.scheduler.config),
        device=device,
        dtype=dtype,
        variants={Mode.TXT2IMG: pipe},
    )


def pipeline_variant(model: LoadedModel, mode: Mode, controlnet: Any = None) -> Any:
    """The pipeline for ``mode``, built once from the loaded one with ``from_pipe`` (weights shared, not copied).

    ControlNet variants are rebuilt when a different ControlNet model is passed.
    """
    existing = model.variants.get(mode)
    if existing is not None and (controlnet is None or getattr(existing, "controlnet", None) is controlnet):
        return existing
    cls = _pipeline_class(model.architecture, mode)
    kwargs: dict[str, Any] = {}
    if mode in (Mode.CONTROLNET, Mode.CONTROLNET_IMG2IMG):
        if controlnet is None:
            raise ModelLoadError("a ControlNet request needs a ControlNet model (--control-model or settings)")
        kwargs["controlnet"] = controlnet
    with quiet_loading():
        pipe = cls.from_pipe(model.pipe, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    model.variants[mode] = pipe
    return pipe
