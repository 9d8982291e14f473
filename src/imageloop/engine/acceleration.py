"""How a loaded pipeline is placed and sped up on its device (``engine.channels_last``, ``compile``, ``cpu_offload``).

:func:`place_pipeline` moves the pipeline to the device (or hands it to diffusers' CPU offload), puts the UNet and
VAE in channels-last memory format, and compiles the denoiser with ``torch.compile``; it returns an
:class:`Acceleration` saying what was done, which attention processors run, and what the compile cost. Attention is
diffusers' default: ``AttnProcessor2_0`` (UNets) or the Flux/SD3 processors, all of which call torch's
``scaled_dot_product_attention``; nothing here or elsewhere in the engine replaces them with the old processor.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

import torch

from imageloop.errors import ModelLoadError

CpuOffload = Literal["off", "model", "sequential"]
ChannelsLast = Literal["auto", "on", "off"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Acceleration:
    """What :func:`place_pipeline` did to a pipeline; ``compile_s`` is the first (compiling) run's time."""

    attention: str
    channels_last: bool
    compiled: bool
    cpu_offload: CpuOffload
    compile_s: float | None = None


def denoiser(pipe: Any) -> torch.nn.Module:
    """The pipeline's denoising network: its UNet, else its transformer (FLUX.1, SD3)."""
    module = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    if not isinstance(module, torch.nn.Module):
        raise ModelLoadError(f"{type(pipe).__name__} has neither a UNet nor a transformer")
    return module


def attention_processors(module: torch.nn.Module) -> str:
    """The attention processor classes ``module`` runs, comma-separated (e.g. 'AttnProcessor2_0')."""
    processors = getattr(module, "attn_processors", None)
    if not isinstance(processors, dict) or not processors:
        return "none"
    return ", ".join(sorted({type(processor).__name__ for processor in processors.values()}))


def check_offload(setting: CpuOffload, device: torch.device) -> None:
    """ModelLoadError naming ``engine.cpu_offload`` when offload is asked for on anything but a CUDA device."""
    if setting == "off":
        return
    if device.type != "cuda" or not torch.cuda.is_available():
        raise ModelLoadError(
            f"engine.cpu_offload={setting!r} needs a CUDA device, but the engine runs on {device.type}"
            f"{'' if torch.cuda.is_available() else ' (torch sees no CUDA device)'}; set engine.cpu_offload to 'off'"
        )


def wants_channels_last(setting: ChannelsLast, device: torch.device) -> bool:
    """Whether ``engine.channels_last`` puts conv weights in channels-last format here ('auto': on CUDA only)."""
    return setting == "on" or (setting == "auto" and device.type == "cuda")


def place_pipeline(pipe: Any, device: torch.device, *, channels_last: ChannelsLast = "auto",
                   compile_denoiser: bool = False, cpu_offload: CpuOffload = "off") -> Acceleration:
    """Put ``pipe`` on ``device`` (or under CPU offload) with the requested memory format and compilation."""
    check_offload(cpu_offload, device)
    if cpu_offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif cpu_offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe.to(device)
    net = denoiser(pipe)
    use_channels_last = wants_channels_last(channels_last, device)
    if use_channels_last:
        for module in (getattr(pipe, "unet", None), getattr(pipe, "vae", None)):
            if isinstance(module, torch.nn.Module):
                module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if compile_denoiser:
        # In place (nn.Module.compile), so the pipeline, LoRA fusing and from_pipe variants keep the same object.
        net.compile()
    return Acceleration(attention=attention_processors(net), channels_last=use_channels_last,
                        compiled=compile_denoiser, cpu_offload=cpu_offload)


def warm_up(pipe: Any, width: int, height: int) -> float:
    """Seconds of one 1-step run at ``width`` x ``height`` (latents only): with a compiled denoiser, its compile."""
    started = time.perf_counter()
    with torch.inference_mode():
        pipe(prompt="", num_inference_steps=1, width=width, height=height, output_type="latent")
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - started


def module_bytes(pipe: Any) -> int:
    """Bytes of all parameters and buffers of the pipeline's modules (what its weights take on the device)."""
    total = 0
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            total += sum(t.numel() * t.element_size() for t in (*component.parameters(), *component.buffers()))
    return total


def cuda_memory() -> tuple[str, int, int] | None:
    """The first CUDA device's name, total and free bytes (``torch.cuda.mem_get_info``), or None without CUDA."""
    if not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info(0)
    return torch.cuda.get_device_name(0), int(total), int(free)
