"""CPU bf16 autocast for the denoising loop (``engine.cpu_autocast``).

On CPUs whose bf16 matrix units are fast (AMX above all) the UNet runs much faster under
``torch.autocast("cpu", dtype=torch.bfloat16)``. Having the instructions is not enough: a CPU that reports
AVX512-BF16 without AMX can run bf16 matmuls slower than fp32 ones. So 'auto' asks the CPU for native bf16 *and*
times a one-off probe (:func:`bf16_speedup`, a few tens of milliseconds, once per process), and autocasts only when
bf16 came out clearly faster. Only the denoising runs under autocast: prompt encodings are made in fp32 (so the
encoding cache holds the same tensors either way), the latents stay fp32 between steps (the scheduler math
promotes), and the VAE decodes the fp32 latents in fp32 outside autocast (:func:`decode_latents`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Iterator
from typing import Any, Literal

import torch

CpuAutocast = Literal["auto", "bf16", "off"]

log = logging.getLogger(__name__)

# 'auto' autocasts only when the probe's bf16 matmuls ran at least this much faster than fp32 ones: a margin over
# timing noise, and the casts around each op cost something the probe does not see.
MIN_PROBE_SPEEDUP = 1.25
_PROBE_SIZE = 384
_PROBE_ROUNDS = 5


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX tiles), as torch's CPU dispatcher sees it."""
    # torch.backends.cpu.get_cpu_capability() says "AVX512" on CPUs without BF16 too: ask for the features.
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    for name in checks:
        check = getattr(torch.cpu, name, None)
        try:
            if check is not None and bool(check()):
                return True
        except RuntimeError:  # an older torch without the probe
            continue
    return False


@functools.cache
def bf16_speedup() -> float:
    """How much faster this process multiplies bf16 matrices than fp32 ones on the CPU (best of a few interleaved
    rounds, at torch's current thread count); measured once per process."""
    a = torch.randn(_PROBE_SIZE, _PROBE_SIZE)
    b = torch.randn(_PROBE_SIZE, _PROBE_SIZE)
    best = {torch.float32: float("inf"), torch.bfloat16: float("inf")}
    operands = {dtype: (a.to(dtype), b.to(dtype)) for dtype in best}
    with torch.inference_mode():
        for x, y in operands.values():
            torch.mm(x, y)  # warm-up: first-call dispatch and allocation
        for _ in range(_PROBE_ROUNDS):
            for dtype, (x, y) in operands.items():
                started = time.perf_counter()
                torch.mm(x, y)
                best[dtype] = min(best[dtype], time.perf_counter() - started)
    speedup = best[torch.float32] / max(best[torch.bfloat16], 1e-9)
    log.info("CPU bf16 probe: bf16 matmul %.2fx the fp32 speed", speedup)
    return speedup


def bf16_pays_off() -> bool:
    """Whether 'auto' autocasts here: native bf16 on the CPU, and the probe measured it clearly faster."""
    return cpu_has_native_bf16() and bf16_speedup() >= MIN_PROBE_SPEEDUP


def resolve_autocast(setting: CpuAutocast, device: torch.device, dtype: torch.dtype) -> torch.dtype | None:
    """The dtype to autocast the denoising to, or None for none: only fp32 models on the CPU; 'bf16' always
    there, 'auto' only where bf16 pays off (:func:`bf16_pays_off`)."""
    if setting == "off" or device.type != "cpu" or dtype != torch.float32:
        return None
    if setting == "bf16" or bf16_pays_off():
        return torch.bfloat16
    return None


def autocast_name(dtype: torch.dtype | None) -> str:
    """How a run's compute dtype is named in PNG parameters, cache keys and benchmark results: 'bf16' or 'off'."""
    return "bf16" if dtype == torch.bfloat16 else "off" if dtype is None else str(dtype).removeprefix("torch.")


@contextlib.contextmanager
def denoise_autocast(dtype: torch.dtype | None) -> Iterator[None]:
    """Autocast on the CPU to ``dtype`` inside the block (nothing when None)."""
    if dtype is None:
        yield
        return
    with torch.autocast("cpu", dtype=dtype):
        yield


def decode_latents(pipe: Any, latents: torch.Tensor) -> list[Any]:
    """PIL images from a diffusers SD/SDXL pipeline's final latents (``output_type="latent"``), decoded by its VAE
    in the VAE's own dtype outside any autocast, as the pipeline itself would (latent scaling or SDXL's mean/std,
    safety checker and watermark when the pipeline has them)."""
    vae = pipe.vae
    with torch.autocast("cpu", enabled=False), torch.inference_mode():
        latents = latents.to(dtype=vae.dtype)
        mean = getattr(vae.config, "latents_mean", None)
        std = getattr(vae.config, "latents_std", None)
        if mean is not None and std is not None:
            shape = (1, len(mean), 1, 1)
            mean_t = torch.tensor(mean).view(shape).to(latents.device, latents.dtype)
            std_t = torch.tensor(std).view(shape).to(latents.device, latents.dtype)
            latents = latents * std_t / vae.config.scaling_factor + mean_t
        else:
            latents = latents / vae.config.scaling_factor
        image = vae.decode(latents, return_dict=False)[0]
        denormalize: list[bool] | None = None
        if getattr(pipe, "safety_checker", None) is not None:
            image, nsfw = pipe.run_safety_checker(image, image.device, vae.dtype)
            denormalize = [not flagged for flagged in nsfw] if nsfw is not None else None
        if getattr(pipe, "watermark", None) is not None:
            image = pipe.watermark.apply_watermark(image)
        return list(pipe.image_processor.postprocess(image, output_type="pil", do_denormalize=denormalize))
