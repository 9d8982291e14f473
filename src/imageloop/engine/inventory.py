"""What models this installation has on disk, and what each needs to run, read from file headers only.

:func:`list_models` walks the embedded model, the models folder, the LoRA library, the ControlNet setting and the
IP-Adapter library. Each :class:`ModelEntry` names its family (detected as the loader detects it: a folder's
``model_index.json``, a checkpoint's key names; for add-ons the cross-attention width of their tensors), its size
on disk, its parameter count (from ``.safetensors`` headers, no tensor is read) and so the memory its weights take
at fp32 and fp16, whether a model's UNet is guidance-embedded (LCM-distilled: a negative prompt costs a second
pass), and what else it needs (components, a base model of its family, an image encoder). Activations come on top
of the weights: a run needs more than the figure shown, most of it at large sizes and batches.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from imageloop.config import EMBEDDED_MODELS, Settings
from imageloop.errors import ImageloopError

# Cross-attention width of the families (attn2.to_k input features; an IP-Adapter's image tokens are this wide).
_FAMILY_BY_CONTEXT_DIM = {768: "sd15", 1024: "sd2", 2048: "sdxl"}
_FLUX_MARKERS = ("double_blocks", "single_blocks", "single_transformer_blocks")
_SD3_MARKERS = ("joint_blocks", "context_block")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
# Single-file component prefixes (original layouts) and the component each is.
_CHECKPOINT_COMPONENTS = {
    "model.diffusion_model.": "denoiser", "first_stage_model.": "vae", "cond_stage_model.": "text_encoder",
    "conditioner.embedders.0.": "text_encoder", "conditioner.embedders.1.": "text_encoder_2",
    "text_encoders.": "text_encoders", "vae.": "vae",
}


@dataclass(frozen=True)
class ModelEntry:
    """One model file or folder: ``kind`` is model, lora, controlnet or ip-adapter; ``problem`` says why it
    cannot be used (then the family may be unknown)."""

    kind: str
    name: str
    path: Path
    family: str
    size_bytes: int
    parameters: int | None
    components: tuple[str, ...] = ()
    needs: tuple[str, ...] = field(default_factory=tuple)
    problem: str | None = None
    guidance_embedded: bool = False  # a model whose UNet takes the guidance as an embedding (LCM-distilled)

    def weights_bytes(self, bytes_per_parameter: int) -> int | None:
        """The memory its weights take at that precision (4 = fp32, 2 = fp16/bf16), or None if unknown."""
        return None if self.parameters is None else self.parameters * bytes_per_parameter

    def describe(self) -> str:
        """One line: family, size on disk, weights at fp32/fp16, components, needs (or the problem)."""
        if self.problem is not None:
            return self.problem
        parts = [self.family, f"{human_bytes(self.size_bytes)} on disk"]
        if self.guidance_embedded:
            parts.insert(1, "guidance-embedded (LCM-distilled: LCM sampler, few steps; a negative prompt costs a "
                            "second pass)")
        fp32, fp16 = self.weights_bytes(4), self.weights_bytes(2)
        if fp32 is not None and fp16 is not None and self.parameters is not None:
            parts.append(f"{human_count(self.parameters)} parameters: weights ~{human_bytes(fp32)} fp32, "
                         f"~{human_bytes(fp16)} fp16")
        if self.components:
            parts.append("components: " + ", ".join(self.components))
        parts.extend(self.needs)
        return "; ".join(parts)


def human_count(count: int) -> str:
    """``count`` with a K, M or B suffix, three significant digits."""
    for divisor, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= divisor:
            return f"{count / divisor:.3g}{suffix}"
    return str(count)


def human_bytes(size: float) -> str:
    """``size`` in B, KB, MB or GB (powers of 1024), two or three significant digits."""
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.3g} {unit}"
        size /= 1024
    return f"{size:.3g} GB"  # pragma: no cover - the loop returns


def disk_size(path: Path) -> int:
    """Bytes of a file, or of every file under a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape in a ``.safetensors`` file, from its header; ImageloopError for an unreadable file."""
    from imageloop.engine.model_files import read_checkpoint_keys

    keys = read_checkpoint_keys(path)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return {key: tuple(handle.get_slice(key).get_shape()) for key in keys}


def count_parameters(shapes: Iterable[tuple[int, ...]]) -> int:
    """Elements of every tensor."""
    return sum(math.prod(shape) for shape in shapes)


def _folder_parameters(folder: Path) -> int | None:
    files = sorted(folder.rglob("*.safetensors"))
    if not files:
        return None
    return sum(count_parameters(tensor_shapes(file).values()) for file in files)


def family_from_shapes(shapes: dict[str, tuple[int, ...]]) -> str:
    """The base-model family an add-on (LoRA, ControlNet, IP-Adapter) is for, from its tensor names and shapes."""
    keys = list(shapes)
    if any(marker in key for key in keys for marker in _FLUX_MARKERS):
        return "flux"
    if any(marker in key for key in keys for marker in _SD3_MARKERS):
        return "sd3"
    for key, shape in shapes.items():
        if key.endswith("image_proj.norm.weight") and len(shape) == 1:
            return _FAMILY_BY_CONTEXT_DIM.get(shape[0], f"unknown (context width {shape[0]})")
        # A cross-attention key (or a LoRA's down matrix of one): its input width is the text context's.
        cross = ("attn2" in key and "to_k" in key) or "to_k_ip" in key
        if cross and key.endswith("weight") and len(shape) == 2 and "lora_up" not in key and "lora_B" not in key:
            return _FAMILY_BY_CONTEXT_DIM.get(shape[1], f"unknown (context width {shape[1]})")
    return "unknown"


def _model_entry(name: str, path: Path, settings: Settings) -> ModelEntry:
    from imageloop.engine.model_files import detect_architecture, folder_embeds_guidance, shipped_config_dir

    size = disk_size(path)
    try:
        family = detect_architecture(path).value
        if path.is_dir():
            index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
            components = tuple(sorted(k for k, v in index.items() if not k.startswith("_") and isinstance(v, list)
                                      and v[0] is not None))
            parameters = _folder_parameters(path)
            needs: tuple[str, ...] = ()
        else:
            shapes = tensor_shapes(path)
            parameters = count_parameters(shapes.values())
            components = tuple(sorted({part for prefix, part in _CHECKPOINT_COMPONENTS.items()
                                       if any(key.startswith(prefix) for key in shapes)}))
            config = settings.engine.model_config_dir or shipped_config_dir(detect_architecture(path))
            needs = (f"config folder {config}",)
    except (ImageloopError, OSError, ValueError) as exc:
        message = exc.message if isinstance(exc, ImageloopError) else str(exc)
        return ModelEntry("model", name, path, "unknown", size, None, problem=message)
    return ModelEntry("model", name, path, family, size, parameters, components, needs,
                      guidance_embedded=path.is_dir() and folder_embeds_guidance(path))


def _addon_entry(kind: str, path: Path, needs: tuple[str, ...] = ()) -> ModelEntry:
    size = disk_size(path)
    try:
        if path.is_dir():
            shapes: dict[str, tuple[int, ...]] = {}
            for file in sorted(path.rglob("*.safetensors")):
                shapes.update(tensor_shapes(file))
            config = path / "config.json"
            if config.is_file():  # a diffusers ControlNet folder says its context width in its config
                width = json.loads(config.read_text(encoding="utf-8")).get("cross_attention_dim")
                shapes.setdefault("config.attn2.to_k.weight", (0, int(width)) if isinstance(width, int) else ())
        else:
            shapes = tensor_shapes(path)
    except (ImageloopError, OSError, ValueError) as exc:
        message = exc.message if isinstance(exc, ImageloopError) else str(exc)
        return ModelEntry(kind, path.stem if path.is_file() else path.name, path, "unknown", size, None,
                          problem=message)
    family = family_from_shapes(shapes)
    parameters = count_parameters(shape for key, shape in shapes.items() if not key.startswith("config."))
    base = (f"a {family} base model",) if not family.startswith("unknown") else ()
    name = path.stem if path.is_file() else path.name
    return ModelEntry(kind, name, path, family, size, parameters or None, (), (*base, *needs))


def _weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _WEIGHT_SUFFIXES) \
        if folder.is_dir() else []


def list_models(settings: Settings) -> list[ModelEntry]:
    """Every model this installation can use: the embedded model, the models folder, LoRAs, the configured
    ControlNet and the IP-Adapters, each with family, size and needs (see the module docstring)."""
    entries: list[ModelEntry] = []
    for name, folder in EMBEDDED_MODELS.items():
        if (folder / "model_index.json").is_file():
            entries.append(_model_entry(name, folder, settings))
    if settings.models_dir.is_dir():
        for path in sorted(settings.models_dir.iterdir()):
            if path.is_dir() or path.suffix.lower() in _WEIGHT_SUFFIXES:
                entries.append(_model_entry(path.name, path, settings))
    entries.extend(_addon_entry("lora", path) for path in _weight_files(settings.loras_dir))
    if settings.engine.controlnet:
        from imageloop.engine.controlnet import resolve_controlnet_path

        try:
            entries.append(_addon_entry("controlnet", resolve_controlnet_path(settings.engine.controlnet, settings)))
        except ImageloopError as exc:
            entries.append(ModelEntry("controlnet", str(settings.engine.controlnet), Path(settings.engine.controlnet),
                                      "unknown", 0, None, problem=exc.message))
    entries.extend(_ip_adapter_entry(path, settings) for path in _ip_adapter_files(settings))
    return entries


def _ip_adapter_files(settings: Settings) -> list[Path]:
    library = settings.ip_adapters_dir
    found = sorted(library.rglob("*.safetensors")) if library.is_dir() else []
    # An image encoder's own weights are not adapters.
    files = [path for path in found if "image_encoder" not in path.relative_to(library).parts]
    configured = settings.engine.ip_adapter
    if configured is not None and Path(configured).expanduser().is_file():
        path = Path(configured).expanduser()
        if path not in files:
            files.append(path)
    return files


def _ip_adapter_entry(path: Path, settings: Settings) -> ModelEntry:
    from imageloop.engine.ip_adapter import resolve_image_encoder_path

    try:
        encoder = resolve_image_encoder_path(path, settings)
        needs = (f"image encoder {encoder} ({human_bytes(disk_size(encoder))})",)
    except ImageloopError as exc:
        needs = (f"image encoder MISSING: {exc.message}",)
    return _addon_entry("ip-adapter", path, needs)
