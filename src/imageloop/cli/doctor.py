"""``imageloop doctor``: what this installation has, what is missing, and how to fix it."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from imageloop import __version__
from imageloop.cli import app
from imageloop.config import EMBEDDED_MODELS, Settings, load_settings
from imageloop.errors import ImageloopError

if TYPE_CHECKING:
    from imageloop.engine.inventory import ModelEntry
    from imageloop.engine.model_knowledge import ModelKnowledge


@dataclass(frozen=True)
class Finding:
    """One line of the report: ``status`` is 'ok', 'warn' (works, but worth knowing) or 'missing' (blocks use)."""

    topic: str
    status: str
    detail: str
    fix: str = ""


def _runtime() -> list[Finding]:
    import diffusers
    import torch
    import transformers

    findings = [
        Finding("imageloop", "ok", f"{__version__} on Python {platform.python_version()} ({platform.machine()})"),
        Finding("libraries", "ok", f"torch {torch.__version__}, diffusers {diffusers.__version__}, "
                                   f"transformers {transformers.__version__}"),
    ]
    from imageloop.engine.acceleration import cuda_memory

    memory = cuda_memory()
    if memory is not None:
        name, total, free = memory
        findings.append(Finding("device", "ok", f"CUDA: {name} (fp16); {torch.cuda.device_count()} GPU(s); VRAM "
                                                f"{_gib(total)} total, {_gib(free)} free"))
    else:
        cuda_build = torch.version.cuda is not None
        findings.append(Finding(
            "device", "warn", f"no CUDA device: CPU only ({os.cpu_count()} cores, torch uses "
                              f"{torch.get_num_threads()} threads)",
            "CUDA torch is installed but sees no GPU: check the driver" if cuda_build else
            "for a GPU: install a CUDA build of torch 2.13.0 (README, 'GPU install')",
        ))
    return findings


def _gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB"


def _model_vram(settings: Settings) -> list[Finding]:
    """Load the serving model on CUDA and say how much VRAM it takes (``doctor --vram``)."""
    import torch

    from imageloop.engine.acceleration import module_bytes
    from imageloop.engine.loader import load_model

    if not torch.cuda.is_available():
        return [Finding("model vram", "warn", "no CUDA device: nothing to measure", "")]
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    try:
        model = load_model(settings.engine.model, settings, config=settings.engine.model_config_dir)
    except ImageloopError as exc:
        return [Finding("model vram", "missing", exc.message, "fix IMAGELOOP_ENGINE__MODEL")]
    allocated = torch.cuda.memory_allocated() - before
    free, total = torch.cuda.mem_get_info(0)
    accel = model.acceleration
    detail = (f"{model.name} ({str(model.dtype).removeprefix('torch.')}, cpu offload {accel.cpu_offload}, attention "
              f"{accel.attention}): {_gib(allocated)} on the GPU (weights {_gib(module_bytes(model.pipe))}); "
              f"{_gib(free)} of {_gib(total)} free after loading")
    return [Finding("model vram", "ok", detail)]


def _cpu_autocast(settings: Settings) -> list[Finding]:
    """What ``engine.cpu_autocast`` resolves to here (CPU engines only), and why."""
    from imageloop.engine.autocast import bf16_speedup, cpu_has_native_bf16, resolve_autocast
    from imageloop.engine.loader import resolve_device

    try:
        device, dtype = resolve_device(settings)
    except ImageloopError:
        return []  # the device finding already says what is wrong
    if device.type != "cpu":
        return []
    setting = settings.engine.cpu_autocast
    chosen = resolve_autocast(setting, device, dtype)
    native = cpu_has_native_bf16()
    why = f"native bf16: {'yes' if native else 'no'}"
    if setting == "auto" and native:
        why += f"; probe: bf16 matmul {bf16_speedup():.2f}x fp32"
    return [Finding("cpu autocast", "ok", f"{setting}: denoising in {'bf16 autocast' if chosen else 'fp32'} ({why})")]


def _data_dir(settings: Settings) -> list[Finding]:
    data = settings.data_dir
    if not data.exists():
        return [Finding("data dir", "warn", f"{data} does not exist yet", "it is created on first use; or set "
                                                                            "IMAGELOOP_DATA_DIR")]
    if not os.access(data, os.W_OK):
        return [Finding("data dir", "missing", f"{data} is not writable", f"fix the permissions of {data}")]
    return [Finding("data dir", "ok", str(data))]


def _describe_model(path: Path) -> str:
    from imageloop.engine.model_files import detect_architecture

    return detect_architecture(path).value


def _entry_finding(entry: ModelEntry, topic: str) -> Finding:
    if entry.problem is not None:
        return Finding(topic, "warn", entry.problem, "remove it or fix the file")
    missing = any("MISSING" in need for need in entry.needs)
    return Finding(topic, "warn" if missing else "ok", entry.describe(),
                   "set IMAGELOOP_ENGINE__IP_IMAGE_ENCODER or put the encoder beside the adapter" if missing else "")


def _models(settings: Settings) -> list[Finding]:
    from imageloop.engine.inventory import list_models

    findings: list[Finding] = []
    entries = list_models(settings)
    configured = EMBEDDED_MODELS.get(settings.engine.model)
    if configured is not None and not (configured / "model_index.json").is_file():
        findings.append(Finding(f"embedded model {settings.engine.model}", "missing",
                                f"not installed ({configured} has no model_index.json)",
                                "use --model PATH / IMAGELOOP_ENGINE__MODEL, or train it: imageloop train base"))
    for entry in entries:
        if entry.kind == "model":
            shipped = entry.path in EMBEDDED_MODELS.values()
            label = f"embedded model {entry.name}" if shipped else f"model {entry.name}"
            findings.append(_entry_finding(entry, label))
    if not any(entry.kind == "model" and entry.path not in EMBEDDED_MODELS.values() for entry in entries):
        findings.append(Finding("models dir", "warn", f"no models in {settings.models_dir}",
                                "put diffusers folders or .safetensors checkpoints there to use them by name"))
    findings.append(_configured_model(settings))
    limit = settings.engine.max_loaded_models
    findings.append(Finding("loaded models", "ok", f"at most {limit} model(s) kept in memory at once (loading another "
                            "releases the least recently used)" if limit else "no limit on models kept in memory",
                            "" if limit else "set IMAGELOOP_ENGINE__MAX_LOADED_MODELS=1 to keep one"))
    findings.extend(_entry_finding(entry, f"{entry.kind} {entry.name}") for entry in entries
                    if entry.kind in {"lora", "controlnet", "ip-adapter"})
    return findings


def _configured_model(settings: Settings) -> Finding:
    from imageloop.engine.model_files import resolve_model_source, shipped_config_dir

    spec = settings.engine.model
    try:
        path = resolve_model_source(spec, settings)
        kind = _describe_model(path)
    except ImageloopError as exc:
        return Finding("serving model", "missing", exc.message, "set IMAGELOOP_ENGINE__MODEL to a model that loads")
    if path.is_file():
        from imageloop.engine.model_files import Architecture

        config = settings.engine.model_config_dir or shipped_config_dir(Architecture(kind))
        if not (config / "model_index.json").is_file():
            return Finding("serving model", "missing", f"{spec}: single-file {kind} needs a config folder ({config})",
                           "set IMAGELOOP_ENGINE__MODEL_CONFIG_DIR to a diffusers folder of the same architecture")
    return Finding("serving model", "ok", f"{spec} -> {path} ({kind})")


def _model_knows(settings: Settings) -> list[Finding]:
    """What the serving model knows: subjects, attributes and native size from its ``knows.json``, or that it takes
    any words (an open-vocabulary model)."""
    from imageloop.engine.model_profile import model_profile

    profile = model_profile(settings.engine.model, settings)
    if profile.problem is not None:
        return []  # "serving model" already says why
    knows = profile.knows
    if knows is None:
        size = f"; native size {profile.native_side}×{profile.native_side}" if profile.native_side else ""
        return [Finding("model knows", "ok", f"{profile.name}: open vocabulary (no knows.json){size}")]
    subjects = ", ".join(f"{s.en[0]} {s.zh[0]}" for s in knows.subjects)
    attributes = "; ".join(f"{name}: {' / '.join(v.en[0] for v in values)}"
                           for name, values in knows.attributes.items())
    native = f"{knows.native_size.width}×{knows.native_size.height}"
    return [
        Finding("model knows", "ok", f"{profile.name}: {len(knows.subjects)} subjects ({subjects})"),
        Finding("model attributes", "ok", f"{attributes}; in {' and '.join(knows.languages)}"),
        Finding("model size", "ok", f"{native} only: it was trained at that size, other sizes degrade",
                f"ask for {native} and upscale"),
        Finding("unnamed attributes", "ok", _unnamed(knows),
                "name each attribute you care about, e.g. 'clear weather'"),
    ]


def _unnamed(knows: ModelKnowledge) -> str:
    weather = knows.attributes.get("weather", ())
    example = f" (a prompt that names no weather gets any of {' / '.join(v.en[0] for v in weather)})" if weather else ""
    return f"drawn at random, as in the training captions that left them out{example}"


def _extras(settings: Settings) -> list[Finding]:
    from imageloop.engine.recipes import RecipeStore

    findings: list[Finding] = []
    if settings.engine.controlnet:
        exists = Path(settings.engine.controlnet).expanduser().exists()
        findings.append(Finding("controlnet", "ok" if exists else "missing", settings.engine.controlnet,
                                "" if exists else "fix IMAGELOOP_ENGINE__CONTROLNET"))
    else:
        findings.append(Finding("controlnet", "warn", "none configured (control images are refused)",
                                "--control-model PATH or IMAGELOOP_ENGINE__CONTROLNET"))
    if settings.engine.ip_adapter:
        from imageloop.engine.ip_adapter import resolve_ip_adapter_path

        try:
            findings.append(Finding("ip-adapter", "ok", str(resolve_ip_adapter_path(settings.engine.ip_adapter,
                                                                                    settings))))
        except ImageloopError as exc:
            findings.append(Finding("ip-adapter", "missing", exc.message, "fix IMAGELOOP_ENGINE__IP_ADAPTER"))
    else:
        findings.append(Finding("ip-adapter", "warn", "none configured (reference images are refused)",
                                f"put one in {settings.ip_adapters_dir} and set IMAGELOOP_ENGINE__IP_ADAPTER"))
    loras = sorted(settings.loras_dir.glob("*.safetensors")) if settings.loras_dir.is_dir() else []
    findings.append(Finding("loras", "ok", f"{len(loras)} in {settings.loras_dir}"))
    scan = RecipeStore(settings).scan()
    findings.append(Finding("recipes", "ok", f"{len(scan.recipes)} in {settings.recipes_dir}"))
    findings.extend(Finding("recipe file", "warn", p.message, "fix or remove the file") for p in scan.problems)
    return findings


def diagnose(settings: Settings) -> list[Finding]:
    """Every finding about this installation, in report order."""
    return [*_runtime(), *_cpu_autocast(settings), *_data_dir(settings), *_models(settings), *_model_knows(settings),
            *_extras(settings)]


@app.command()
def doctor(
    vram: bool = typer.Option(False, "--vram", help="Load the serving model on the GPU and report its VRAM use."),
) -> None:
    """Check torch and the device (CUDA: VRAM total and free), the data dir, recipes; list each model, LoRA,
    ControlNet and IP-Adapter found with its family, size on disk and what it needs (weights' memory at fp32/fp16);
    say how to fix problems."""
    settings = load_settings()
    findings = diagnose(settings)
    if vram:
        findings.extend(_model_vram(settings))
    table = Table(title="imageloop doctor")
    for column in ("", "topic", "status", "fix"):
        table.add_column(column)
    marks = {"ok": "[green]✓[/]", "warn": "[yellow]![/]", "missing": "[red]✗[/]"}
    for finding in findings:
        table.add_row(marks[finding.status], finding.topic, finding.detail, finding.fix)
    Console().print(table)
    if any(finding.status == "missing" for finding in findings):
        raise typer.Exit(1)
