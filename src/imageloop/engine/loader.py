"""Loading models: diffusers folders and single-file ``.safetensors`` checkpoints (SD1.5, SDXL, FLUX.1, SD3).

:func:`load_model` finds the model (``"embedded"``, a name under the data dir's ``models/``, or a path), detects
its architecture, loads the text-to-image pipeline on the configured device, and hashes its weights so results
can name the exact version. A FLUX.1 or SD3 single file holds the transformer (original BFL/SAI keys or diffusers
keys); its text encoders, VAE, tokenizers and scheduler come from a diffusers folder of the same family given as
``config`` (nothing is shipped for them: they are gigabytes). :func:`pipeline_variant` builds the img2img /
ControlNet pipelines from the loaded one with ``from_pipe``, sharing its weights. Every failure is a
:class:`ModelLoadError` (or :class:`UnsupportedModelError`) naming the path and the reason. What can be read from a
model's files without loading it (where it lives, its architecture, hash and defaults) is in
:mod:`imageloop.engine.model_files`.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch

from imageloop.config import Settings, embedded_name
from imageloop.engine.acceleration import Acceleration, denoiser, place_pipeline, warm_up
from imageloop.engine.conditioning import PromptWeighting
from imageloop.engine.families import (
    FLOW_SCHEDULERS,
    GUIDANCE_EMBEDDED_SCHEDULER,
    GUIDANCE_EMBEDDED_STEPS,
    check_flow_scheduler,
    family_defaults,
    is_flow_family,
    negative_unused_reason,
    unet_embeds_guidance,
)
from imageloop.engine.model_files import (
    MODEL_DEFAULTS_FILE,
    Architecture,
    ModelDefaults,
    content_hash,
    detect_architecture,
    read_model_defaults,
    resolve_model_source,
    shipped_config_dir,
)
from imageloop.engine.schedulers import canonical_scheduler_name, scheduler_spec
from imageloop.engine.timing import DENOISER_CLOCK
from imageloop.engine.transformer_files import left_out_t5, load_transformer_file
from imageloop.errors import ImageloopError, InvalidRequestError, ModelLoadError, UnsupportedModelError
from imageloop.loading import MODEL_LOADS

FALLBACK_STEPS = 20
FALLBACK_GUIDANCE = 7.0
FALLBACK_SCHEDULER = "DPM++ 2M Karras"


class _TorchvisionFallbackNotice(logging.Filter):
    """Drops transformers' once-per-class notice that an image processor falls back to its PIL version because
    torchvision is not installed: Imageloop leaves torchvision out on purpose, the PIL versions are what it wants,
    and the notice was the first thing a new user read after ``make demo``."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision (not installed)" not in record.getMessage()


logging.getLogger("transformers.utils.import_utils").addFilter(_TorchvisionFallbackNotice())


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

@dataclass(frozen=True)
class ResolvedDefaults:
    """Complete defaults for a loaded model: its own file's values, else values derived from its config."""

    steps: int
    guidance_scale: float
    width: int
    height: int
    scheduler: str
    prompt_weighting: PromptWeighting = "a1111"
    timesteps: tuple[int, ...] | None = None  # the model's own schedule for its default steps and scheduler


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
    acceleration: Acceleration = field(
        default_factory=lambda: Acceleration(attention="", channels_last=False, compiled=False, cpu_offload="off"))
    guidance_embedded: bool = False  # an SD-family UNet that takes the guidance as an embedding (LCM-distilled)

    @property
    def negative_unused(self) -> str | None:
        """Why a negative prompt has no effect on this model (FLUX.1), or None when it is used (a guidance-embedded
        UNet's by the engine's own negative pass, see :mod:`imageloop.engine.embedded_negative`)."""
        return negative_unused_reason(self.architecture.value)

    @property
    def runs_negative_pass(self) -> bool:
        """Whether a negative (unconditional) pass runs, so a negative prompt is worth encoding."""
        return self.negative_unused is None

    @property
    def short_hash(self) -> str:
        """The first 10 hex digits of the version, as A1111 shows a model hash."""
        return self.version[:10]

    def require_sd15(self, purpose: str) -> None:
        """UnsupportedModelError unless this is an SD1.x-style model with a plain (not guidance-embedded) UNet, the
        only kind ``purpose`` trains: its loss is the noise-prediction one, which on an LCM-distilled UNet would
        train the distillation away."""
        if self.architecture is not Architecture.SD15:
            raise UnsupportedModelError(f"{purpose} needs an SD1.x-style model; {self.name} is "
                                        f"{self.architecture.value}")
        if self.guidance_embedded:
            raise UnsupportedModelError(
                f"{purpose} trains with the noise-prediction loss; {self.name} is LCM-distilled (its UNet takes the "
                "guidance as an embedding), and that loss would undo the distillation: set engine.model to its "
                "teacher (for embedded-lcm: embedded) while training")


def resolve_device(settings: Settings, architecture: Architecture | None = None) -> tuple[torch.device, torch.dtype]:
    """The device and dtype from settings: 'auto' means CUDA when available, else CPU with fp32. On CUDA 'auto' is
    fp16, except FLUX.1 in bf16 where the card has it (its activations overflow fp16: black images)."""
    engine = settings.engine
    if engine.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(engine.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("engine.device is 'cuda' but torch sees no CUDA device (CPU-only torch build?)")
    if engine.dtype == "auto":
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        if device.type == "cuda" and architecture is Architecture.FLUX and torch.cuda.is_bf16_supported():
            dtype = torch.bfloat16
    else:
        dtype = getattr(torch, engine.dtype)
    return device, dtype


def complete_defaults(
    pipe: Any, own: ModelDefaults, architecture: Architecture = Architecture.SD15
) -> ResolvedDefaults:
    """Fill the gaps of a model's own defaults: native size from its UNet (or transformer) and VAE config; steps
    and guidance: A1111's usual ones, or the family's for FLUX.1 / SD3 (see families); a guidance-embedded UNet
    runs the LCM sampler in few steps."""
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
        if unet_embeds_guidance(pipe):
            steps, scheduler = GUIDANCE_EMBEDDED_STEPS, GUIDANCE_EMBEDDED_SCHEDULER
        native = int(pipe.unet.config.sample_size) * int(getattr(pipe, "vae_scale_factor", 8))
    resolved = ResolvedDefaults(
        steps=own.steps or steps,
        guidance_scale=own.guidance_scale if own.guidance_scale is not None else guidance,
        width=own.width or native,
        height=own.height or native,
        scheduler=canonical_scheduler_name(own.scheduler) if own.scheduler else scheduler,
        prompt_weighting=own.prompt_weighting or "a1111",
        timesteps=tuple(own.timesteps) if own.timesteps else None,
    )
    _check_timesteps(resolved)
    return resolved


def _check_timesteps(defaults: ResolvedDefaults) -> None:
    """A model's own timesteps need one value per default step and a default sampler that takes custom timesteps."""
    if defaults.timesteps is None:
        return
    if len(defaults.timesteps) != defaults.steps:
        raise ModelLoadError(f"{MODEL_DEFAULTS_FILE}: timesteps has {len(defaults.timesteps)} values but the "
                             f"model's default steps are {defaults.steps}: one per step")
    scheduler_class = scheduler_spec(defaults.scheduler).scheduler_class
    if "timesteps" not in inspect.signature(scheduler_class.set_timesteps).parameters:
        raise ModelLoadError(f"{MODEL_DEFAULTS_FILE}: timesteps needs a sampler that takes custom timesteps; "
                             f"{defaults.scheduler} does not (LCM, Euler, DPM++ 2M and others do)")


@contextmanager
def quiet_loading() -> Iterator[None]:
    """One model load at a time in the process (:mod:`imageloop.loading`), without the progress bars and advice
    diffusers/transformers print while loading (the engine reports its own progress; the log levels are global)."""
    import diffusers
    import transformers

    logs: list[Any] = [diffusers.utils.logging, transformers.utils.logging]
    with MODEL_LOADS:
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
    device, dtype = resolve_device(settings, architecture)
    own_defaults = read_model_defaults(path) if path.is_dir() else ModelDefaults()
    folder = single_file_config(path, architecture, config, settings) if path.is_file() else None
    engine = settings.engine
    pipe = _load_pipeline(path, architecture, folder, dtype)
    guidance_embedded = unet_embeds_guidance(pipe)  # read before compiling wraps the UNet
    with quiet_loading():
        acceleration = place_pipeline(pipe, device, channels_last=engine.channels_last,
                                      compile_denoiser=engine.compile, cpu_offload=engine.cpu_offload)
    pipe.set_progress_bar_config(disable=True)
    DENOISER_CLOCK.attach(denoiser(pipe))
    defaults = complete_defaults(pipe, own_defaults, architecture)
    name = embedded_name(path) or (path.stem if path.is_file() else path.name)
    log = logging.getLogger(__name__)
    if engine.compile:
        # torch.compile is lazy: a one-step run at the model's native size pays the compile now, not a user's request.
        seconds = warm_up(pipe, defaults.width, defaults.height)
        acceleration = dataclasses.replace(acceleration, compile_s=seconds)
        log.info("compiled the %s of %s in %.1f s", type(pipe).__name__, name, seconds)
    log.info("loaded %s%s model %s from %s on %s (%s; attention %s, channels-last %s, compiled %s, cpu offload %s)",
             architecture.value, " guidance-embedded" if guidance_embedded else "", name, path, device,
             str(dtype).removeprefix("torch."), acceleration.attention, acceleration.channels_last,
             acceleration.compiled, acceleration.cpu_offload)
    return LoadedModel(
        pipe=pipe,
        architecture=architecture,
        name=name,
        path=path,
        version=content_hash(path),
        defaults=defaults,
        scheduler_config=dict(pipe.scheduler.config),
        device=device,
        dtype=dtype,
        variants={Mode.TXT2IMG: pipe},
        acceleration=acceleration,
        guidance_embedded=guidance_embedded,
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
