"""Apply a recipe's LoRAs to a diffusers pipeline as named PEFT adapters: loaded once, switched per request.

Each LoRA file is loaded into a pipeline once, as an adapter named after the file's content hash (so an edited
file is loaded again under a new name, and two copies of one file share an adapter). Every request then calls
:meth:`LoraManager.apply`, which activates exactly the recipe's adapters with its weights, or switches every
adapter off. Adapters are never fused into the base weights, so switching recipes cannot leak: recipe A, then no
recipe, gives the same bytes as no recipe alone.

diffusers' ``load_lora_weights`` reads diffusers/PEFT-format files and converts kohya-format ones
(``lora_unet_*.lora_down.weight`` / ``lora_up`` / ``alpha``, SD1.5, SDXL and FLUX.1 naming, the transformer's
for FLUX.1: ``lora_unet_double_blocks_*``, diffusers' ``transformer.*``). Only ``.safetensors`` files are
read; pickled checkpoints are refused because loading them can run code.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

import torch
from peft.tuners.tuners_utils import BaseTunerLayer

from imageloop.config import Settings
from imageloop.engine.recipes import LORA_SUFFIX, Recipe, resolve_lora_path
from imageloop.errors import ConflictError, RecipeError
from imageloop.files import atomic_write
from imageloop.loading import MODEL_LOADS

ADAPTER_PREFIX = "lora_"
DEFAULT_MAX_LOADED = 8
# One "down" (A) matrix per LoRA layer, in each of the key spellings diffusers can load:
# PEFT `lora_A.weight`, kohya `lora_down.weight`, diffusers `lora.down.weight` / `lora_linear_layer.down.weight`.
_DOWN_KEY = re.compile(r"lora(?:_A|_down|\.down|_linear_layer\.down)\.weight$")
_UP_KEY = re.compile(r"lora(?:_B|_up|\.up|_linear_layer\.up)\.weight$")
_SD_COMPONENTS = frozenset({"unet", "text_encoder", "text_encoder_2", "transformer"})
# Key starts that mark a LoRA of a FLUX.1 / SD3 transformer (kohya's and diffusers' spellings).
_TRANSFORMER_LORA_KEYS = ("transformer.", "lora_unet_double_blocks_", "lora_unet_single_blocks_", "lora_transformer_")
# Cross-attention width (attn2.to_k input features) of the known Stable Diffusion families.
_BASE_BY_CONTEXT_DIM = {768: "SD1.x", 1024: "SD2.x", 2048: "SDXL"}

ActiveAdapters = tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class LoraFileInfo:
    """What :func:`inspect_lora_file` learned about a LoRA file."""

    path: Path
    sha256: str
    layers: int
    components: tuple[str, ...]
    base: str


@dataclass
class _AdapterState:
    """Per denoiser: which adapters this manager loaded (least recently used first) and what is active."""

    order: OrderedDict[str, None] = field(default_factory=OrderedDict)
    by_path: dict[Path, str] = field(default_factory=dict)
    active: ActiveAdapters = ()


class LoraManager:
    """Loads LoRA files into pipelines as adapters and activates the ones a recipe asks for.

    Thread-safe, but the caller must hold the pipeline between :meth:`apply` and the generation it prepares.
    Pipelines that share a UNet (``from_pipe`` variants) share its adapters. At most ``max_loaded`` adapters stay
    loaded per UNet; the least recently used ones are unloaded first.
    """

    def __init__(self, settings: Settings, *, max_loaded: int = DEFAULT_MAX_LOADED) -> None:
        if max_loaded < 1:
            raise ValueError(f"max_loaded must be at least 1, got {max_loaded}")
        self.loras_dir = settings.loras_dir
        self.max_loaded = max_loaded
        self._hashes = _FileHashes()
        self._states: WeakKeyDictionary[Any, _AdapterState] = WeakKeyDictionary()
        self._lock = threading.RLock()

    def apply(self, pipe: Any, recipe: Recipe | None) -> None:
        """Make ``pipe`` use exactly ``recipe``'s LoRAs at their weights; ``None`` (or no LoRAs) turns LoRA off.

        Files are loaded on first use and kept; the base weights are never changed. A missing, corrupt or
        incompatible file raises RecipeError naming it, and leaves the pipeline usable with LoRA switched off.
        """
        with self._lock:
            state = self._state(pipe)
            try:
                wanted = self._wanted(recipe)
                if not wanted:
                    _set_adapters_enabled(pipe, enabled=False)
                    state.active = ()
                    return
                combined: dict[str, float] = {}
                for path, weight in wanted:
                    name = self._ensure_loaded(pipe, state, path)
                    # Two paths with the same content share one adapter; scales add up exactly.
                    combined[name] = combined.get(name, 0.0) + weight
                self._evict(pipe, state, keep=set(combined))
                _set_adapters_enabled(pipe, enabled=True)
                pipe.set_adapters(list(combined), adapter_weights=list(combined.values()))
                state.active = tuple(combined.items())
            except BaseException:
                _set_adapters_enabled(pipe, enabled=False)
                state.active = ()
                raise

    def active(self, pipe: Any) -> ActiveAdapters:
        """The (adapter name, weight) pairs the last :meth:`apply` activated on ``pipe``; empty when LoRA is off.

        Changes whenever a LoRA file's content or a weight changes, so caches of text-encoder outputs or results
        should include it in their key.
        """
        with self._lock:
            return self._state(pipe).active

    def loaded(self, pipe: Any) -> list[str]:
        """Names of the adapters currently loaded into ``pipe`` (by any code), sorted."""
        return sorted(_loaded_adapters(pipe))

    # Internals -----------------------------------------------------------------------------------------------

    def _state(self, pipe: Any) -> _AdapterState:
        denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)  # shared by from_pipe variants
        key = pipe if denoiser is None else denoiser
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = _AdapterState()
        return state

    def _wanted(self, recipe: Recipe | None) -> list[tuple[Path, float]]:
        if recipe is None:
            return []
        wanted = []
        for lora in recipe.loras:
            try:
                path = resolve_lora_path(lora.file, self.loras_dir)
            except RecipeError as exc:
                raise RecipeError(f"recipe {recipe.name!r}: {exc.message}") from exc
            if lora.weight != 0.0:  # weight 0 is the same as leaving it out; skip the work
                wanted.append((path.resolve(), lora.weight))
        return wanted

    def _ensure_loaded(self, pipe: Any, state: _AdapterState, path: Path) -> str:
        stamp, digest = self._hashes.digest(path)
        name = ADAPTER_PREFIX + digest[:16]
        if name not in _loaded_adapters(pipe):
            _load_adapter(pipe, path, name)
            if _stat_stamp(path) != stamp:
                _delete_adapter(pipe, name)
                raise RecipeError(f"LoRA {path} changed while it was being loaded; try again")
        state.order[name] = None
        state.order.move_to_end(name)
        previous = state.by_path.get(path)
        state.by_path[path] = name
        if previous is not None and previous != name and previous not in state.by_path.values():
            # The file was edited: its old content will not be asked for again under this path.
            _delete_adapter(pipe, previous)
            state.order.pop(previous, None)
        return name

    def _evict(self, pipe: Any, state: _AdapterState, keep: set[str]) -> None:
        loaded = _loaded_adapters(pipe)
        for name in [n for n in state.order if n not in loaded]:
            state.order.pop(name)  # unloaded by someone else
        for name in list(state.order):
            if len(state.order) <= self.max_loaded:
                break
            if name in keep:
                continue
            _delete_adapter(pipe, name)
            state.order.pop(name)
            for path in [p for p, n in state.by_path.items() if n == name]:
                del state.by_path[path]


class _FileHashes:
    """sha256 of files, recomputed only when a file's size, mtime or inode changes."""

    def __init__(self) -> None:
        self._cache: dict[Path, tuple[tuple[int, int, int], str]] = {}

    def digest(self, path: Path) -> tuple[tuple[int, int, int], str]:
        stamp = _stat_stamp(path)
        cached = self._cache.get(path)
        if cached is not None and cached[0] == stamp:
            return cached
        digest = file_sha256(path)
        self._cache[path] = (stamp, digest)
        return stamp, digest


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    sha = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                sha.update(chunk)
    except OSError as exc:
        raise RecipeError(f"LoRA {path}: cannot be read: {exc}") from exc
    return sha.hexdigest()


def _stat_stamp(path: Path) -> tuple[int, int, int]:
    try:
        st = path.stat()
    except OSError as exc:
        raise RecipeError(f"LoRA {path}: cannot be read: {exc}") from exc
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _lora_modules(pipe: Any) -> list[torch.nn.Module]:
    components = getattr(pipe, "components", {})
    return [c for c in components.values() if isinstance(c, torch.nn.Module)]


def _loaded_adapters(pipe: Any) -> set[str]:
    names: set[str] = set()
    for module in _lora_modules(pipe):
        for sub in module.modules():
            if isinstance(sub, BaseTunerLayer):
                names.update(getattr(sub, "lora_A", {}).keys())
                names.update(getattr(sub, "lora_embedding_A", {}).keys())
    return names


@dataclass(frozen=True)
class _LoraTotals:
    """Size and magnitude of a LoRA's matrices: equal totals mean every matrix of a file arrived in the model."""

    layers: int
    numel: int
    abs_sum: float

    def matches(self, other: _LoraTotals) -> bool:
        # Loose tolerance: the model may hold the weights in fp16/bf16.
        return self.numel == other.numel and abs(self.abs_sum - other.abs_sum) <= 1e-2 * max(other.abs_sum, 1e-12)


def _adapter_totals(pipe: Any, name: str) -> _LoraTotals:
    layers = numel = 0
    abs_sum = 0.0
    for module in _lora_modules(pipe):
        for sub in module.modules():
            if not isinstance(sub, BaseTunerLayer):
                continue
            for attr in ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B"):
                holder = getattr(sub, attr, {})
                if name not in holder:
                    continue
                item = holder[name]
                tensor: torch.Tensor = getattr(item, "weight", item)
                layers += attr.endswith("A")
                numel += tensor.numel()
                abs_sum += float(tensor.detach().double().abs().sum())
    return _LoraTotals(layers, numel, abs_sum)


def _file_totals(path: Path) -> _LoraTotals:
    from safetensors import safe_open

    layers = numel = 0
    abs_sum = 0.0
    with safe_open(str(path), framework="pt") as handle:
        for key in handle.keys():  # noqa: SIM118 - safe_open handles are not iterable
            is_down = _DOWN_KEY.search(key) is not None
            if is_down or _UP_KEY.search(key):
                tensor = handle.get_tensor(key)
                layers += is_down
                numel += tensor.numel()
                abs_sum += float(tensor.double().abs().sum())
    return _LoraTotals(layers, numel, abs_sum)


def _set_adapters_enabled(pipe: Any, *, enabled: bool) -> None:
    # What pipe.enable_lora()/disable_lora() do, per PEFT layer of every component: also works for a pipeline
    # class without LoRA support, and does not depend on diffusers' list of LoRA-loadable components.
    for module in _lora_modules(pipe):
        for sub in module.modules():
            if isinstance(sub, BaseTunerLayer):
                sub.enable_adapters(enabled)


def _delete_adapter(pipe: Any, name: str) -> None:
    with warnings.catch_warnings():
        # PEFT warns when the deleted adapter was active; apply() sets the active adapters right after.
        warnings.simplefilter("ignore", UserWarning)
        pipe.delete_adapters([name])


def _load_adapter(pipe: Any, path: Path, name: str) -> None:
    """Load ``path`` into ``pipe`` as adapter ``name``; RecipeError (and nothing left loaded) if it does not fit."""
    if not hasattr(pipe, "load_lora_weights"):
        raise RecipeError(f"LoRA {path}: {type(pipe).__name__} cannot use LoRAs")
    count_lora_layers(path)  # a clear error for a file that is not a LoRA at all
    try:
        with MODEL_LOADS, _quiet_adapter_loading():  # one load at a time in the process (imageloop.loading)
            pipe.load_lora_weights(str(path), adapter_name=name, use_safetensors=True, local_files_only=True)
        expected, loaded = _file_totals(path), _adapter_totals(pipe, name)
    except Exception as exc:
        _delete_adapter(pipe, name)
        raise RecipeError(f"LoRA {path}: cannot be loaded into this {type(pipe).__name__}: {_reason(exc)}") from exc
    if loaded.layers < expected.layers:
        _delete_adapter(pipe, name)
        raise RecipeError(
            f"LoRA {path}: only {loaded.layers} of its {expected.layers} layers match this {type(pipe).__name__}; "
            "is it a LoRA for another base model (SD1.5 / SDXL)?"
        )
    if not loaded.matches(expected):
        _delete_adapter(pipe, name)
        raise RecipeError(f"LoRA {path}: its weights did not arrive intact in the model (diffusers/peft mismatch?)")


def _reason(exc: Exception) -> str:
    """One readable line for a loading failure (torch lists every mismatched tensor on its own line)."""
    text = str(exc)
    if "size mismatch" in text:
        return "its layer shapes do not match this model's; is it a LoRA for another base model (SD1.5 / SDXL)?"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first[:300]


class _DropLoadReports(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()


@contextmanager
def _quiet_adapter_loading() -> Iterator[None]:
    # transformers' report on a text encoder's second adapter lists the first adapter's weights as "MISSING,
    # newly initialized"; they are not touched. _load_adapter checks the weights itself instead.
    logger = logging.getLogger("transformers.integrations.peft")
    drop = _DropLoadReports()
    logger.addFilter(drop)
    try:
        with warnings.catch_warnings():
            # Several adapters per model is the point here, not a mistake.
            warnings.filterwarnings("ignore", message="Already found a `peft_config`", category=UserWarning)
            # A file for another model also triggers this; _load_adapter reports it as a RecipeError.
            warnings.filterwarnings("ignore", message="While injecting the PEFT adapters", category=RuntimeWarning)
            yield
    finally:
        logger.removeFilter(drop)


def _read_safetensors_keys(path: Path) -> list[str]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return list(handle.keys())
    except (SafetensorError, OSError, ValueError) as exc:
        raise RecipeError(f"LoRA {path}: not a readable .safetensors file: {exc}") from exc


def count_lora_layers(path: Path) -> int:
    """Number of LoRA layers in a .safetensors file (read from its header only).

    RecipeError naming the file if it is not a readable safetensors file or holds no LoRA layers.
    """
    keys = _read_safetensors_keys(path)
    layers = sum(1 for key in keys if _DOWN_KEY.search(key))
    if layers == 0:
        sample = ", ".join(keys[:3]) or "no tensors"
        raise RecipeError(
            f"LoRA {path}: holds no LoRA layers (expected keys like '….lora_down.weight' or '….lora_A.weight'; "
            f"found {sample})"
        )
    return layers


def inspect_lora_file(path: Path) -> LoraFileInfo:
    """Check that ``path`` is a Stable Diffusion (SD1.x/SD2.x/SDXL) or FLUX.1 LoRA diffusers can load, and describe
    it.

    Loads the state dict through diffusers (converting kohya keys) without a model. RecipeError naming the file
    if it is not a safetensors file, not a LoRA, or a LoRA for another kind of model.
    """
    from diffusers import FluxPipeline, StableDiffusionPipeline

    if path.suffix.lower() != LORA_SUFFIX:
        raise RecipeError(f"LoRA {path}: only {LORA_SUFFIX} files are accepted")
    layers = count_lora_layers(path)
    raw_keys = _read_safetensors_keys(path)
    transformer = any(key.startswith(_TRANSFORMER_LORA_KEYS) for key in raw_keys)
    kohya_flux = any(key.startswith(_TRANSFORMER_LORA_KEYS[1:]) for key in raw_keys)
    try:
        if transformer:
            state_dict = FluxPipeline.lora_state_dict(str(path), use_safetensors=True, local_files_only=True)
        else:
            state_dict, _alphas = StableDiffusionPipeline.lora_state_dict(
                str(path), use_safetensors=True, local_files_only=True
            )
    except Exception as exc:
        raise RecipeError(f"LoRA {path}: not a LoRA diffusers can read: {exc}") from exc
    components = sorted({key.split(".", 1)[0] for key in state_dict})
    foreign = [c for c in components if c not in _SD_COMPONENTS]
    if foreign or not all("lora" in key for key in state_dict):
        raise RecipeError(
            f"LoRA {path}: not a Stable Diffusion LoRA (its layers target {', '.join(foreign) or 'non-LoRA keys'})"
        )
    return LoraFileInfo(
        path=path,
        sha256=file_sha256(path),
        layers=layers,
        components=tuple(components),
        base="FLUX.1" if kohya_flux else _guess_base(state_dict),
    )


def _guess_base(state_dict: dict[str, torch.Tensor]) -> str:
    if any(".single_transformer_blocks." in key for key in state_dict):
        return "FLUX.1"
    if any(key.startswith("transformer.") for key in state_dict):
        return "FLUX.1 or SD3"
    if any(key.startswith("text_encoder_2.") for key in state_dict):
        return "SDXL"
    for key, tensor in state_dict.items():
        if "attn2" in key and "to_k" in key and _DOWN_KEY.search(key) and tensor.ndim == 2:
            return _BASE_BY_CONTEXT_DIM.get(int(tensor.shape[1]), "unknown")
    return "unknown"


def install_lora(source: Path, loras_dir: Path, *, name: str | None = None, overwrite: bool = False) -> LoraFileInfo:
    """Check ``source`` with :func:`inspect_lora_file` and copy it into ``loras_dir`` atomically.

    ``name`` is the file name to use (default: the source's; ``.safetensors`` is added if missing). An existing
    file of that name is a ConflictError unless ``overwrite``. Returns the installed file's info.
    """
    info = inspect_lora_file(source)
    target_name = name or source.name
    if not target_name.lower().endswith(LORA_SUFFIX):
        target_name += LORA_SUFFIX
    if Path(target_name).name != target_name or target_name.startswith("."):
        raise RecipeError(f"LoRA name {target_name!r}: must be a plain file name")
    target = loras_dir / target_name
    if target.exists() and not overwrite:
        raise ConflictError(f"LoRA {target_name!r} already exists in {loras_dir}")
    with atomic_write(target) as out, source.open("rb") as src:
        shutil.copyfileobj(src, out, 1 << 20)
    return LoraFileInfo(target, info.sha256, info.layers, info.components, info.base)
