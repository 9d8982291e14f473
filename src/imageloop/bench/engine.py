"""``imageloop bench engine``: our Engine against a plain diffusers call, and both against the hardware.

Both paths run the same loaded pipeline (same weights, sampler, steps, CFG, size, batch), warm, interleaved run by
run so background load hits both alike. The engine's text-encoder cache is warm too (the prompt repeats; seeds
differ so the result cache never answers) — that is part of what the engine brings. The hardware line counts the
UNet's FLOPs for one denoising step (``torch.utils.flop_counter``) and divides by the rate of a large matmul
measured on the same device, which bounds how fast the denoising loop could possibly be.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from imageloop.config import Settings
from imageloop.engine.acceleration import denoiser
from imageloop.engine.engine import Engine
from imageloop.engine.request import GenerationRequest
from imageloop.engine.schedulers import make_scheduler

DEFAULT_PROMPT = "a red fox in the snow at dusk, cinematic lighting, detailed"
DEFAULT_NEGATIVE = "blurry, lowres"


@dataclass(frozen=True)
class EngineBenchConfig:
    """What to measure. ``None`` settings come from the model's defaults, as a request's would."""

    model: str | None = None
    config: Path | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    width: int | None = None
    height: int | None = None
    scheduler: str | None = None
    batch: int = 1
    repeats: int = 3
    prompt: str = DEFAULT_PROMPT
    negative_prompt: str = DEFAULT_NEGATIVE


@dataclass(frozen=True)
class PathTiming:
    """Seconds per run (batch of images) of one path, over the repeats."""

    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def images_per_second(self, batch: int) -> float:
        return batch / self.median


def measure_matmul_flops(device: torch.device, dtype: torch.dtype, size: int | None = None, repeats: int = 5) -> float:
    """FLOP/s of the best of ``repeats`` square matmuls of ``size`` on ``device`` (2*n^3 FLOPs each)."""
    n = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 1):  # the first one warms up
        _sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def count_unet_flops(unet: torch.nn.Module, into: list[int]) -> Iterator[None]:
    """Append the FLOPs of every UNet forward inside the block to ``into`` (and nothing else's)."""
    original = unet.forward
    had_own_forward = "forward" in vars(unet)  # e.g. wrapped by accelerate hooks

    def counted(*args: Any, **kwargs: Any) -> Any:
        with FlopCounterMode(display=False) as counter:
            out = original(*args, **kwargs)
        into.append(int(counter.get_total_flops()))
        return out

    unet.forward = counted
    try:
        yield
    finally:
        if had_own_forward:
            unet.forward = original
        else:
            del unet.forward  # back to the class's method


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def run_engine_bench(settings: Settings, bench: EngineBenchConfig, progress: Callable[[str], None] | None = None
                     ) -> dict[str, Any]:
    """Measure and return the JSON-ready result (see the module docstring)."""
    say = progress or (lambda _message: None)
    engine = Engine(settings, model=bench.model, config=bench.config)
    model = engine.model
    base = GenerationRequest(
        prompt=bench.prompt, negative_prompt=bench.negative_prompt, steps=bench.steps,
        guidance_scale=bench.guidance_scale, width=bench.width, height=bench.height, scheduler=bench.scheduler,
        num_images=bench.batch, seed=0,
    )
    resolved = engine.resolve(base)
    assert resolved.steps is not None and resolved.width is not None and resolved.height is not None
    pipe = model.pipe
    seeds = iter(range(1, 10**9, bench.batch))

    def plain() -> Any:
        seed = next(seeds)
        pipe.scheduler = make_scheduler(resolved.scheduler or "Euler", model.scheduler_config)
        return pipe(
            prompt=bench.prompt, negative_prompt=bench.negative_prompt, num_inference_steps=resolved.steps,
            guidance_scale=resolved.guidance_scale, width=resolved.width, height=resolved.height,
            num_images_per_prompt=bench.batch, output_type="pil",
            generator=[torch.Generator("cpu").manual_seed(seed + i) for i in range(bench.batch)],
        )

    def ours() -> Any:
        return engine.generate(resolved.model_copy(update={"seed": next(seeds)}))

    say("warming up")
    _timed(plain, model.device)
    _timed(ours, model.device)
    plain_times, engine_times = [], []
    for index in range(bench.repeats):
        say(f"run {index + 1}/{bench.repeats}")
        plain_times.append(_timed(plain, model.device))
        engine_times.append(_timed(ours, model.device))
    flops: list[int] = []
    with count_unet_flops(denoiser(pipe), flops):
        plain()
    say("measuring matmul rate")
    matmul = measure_matmul_flops(model.device, model.dtype)
    return _result(bench, engine, resolved, PathTiming(plain_times), PathTiming(engine_times), flops, matmul)


def run_gpu_engine_bench(settings: Settings, bench: EngineBenchConfig,
                         progress: Callable[[str], None] | None = None) -> dict[str, Any] | None:
    """The same measurement on the CUDA device (the engine's dtype 'auto' = fp16 there, or the configured one), or
    None when torch sees no CUDA device."""
    if not torch.cuda.is_available():
        return None
    engine = settings.engine.model_copy(update={"device": "cuda"})
    return run_engine_bench(settings.model_copy(update={"engine": engine}), bench, progress)


def _result(bench: EngineBenchConfig, engine: Engine, resolved: GenerationRequest, plain: PathTiming,
            ours: PathTiming, flops: list[int], matmul: float) -> dict[str, Any]:
    model = engine.model
    steps = resolved.steps or 1
    per_step = statistics.median(flops) if flops else 0.0  # one UNet call per step (CFG halves share it)
    ideal = per_step * steps / matmul
    return {
        "benchmark": "engine",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "device": str(model.device), "dtype": str(model.dtype).removeprefix("torch."),
                    "torch_threads": torch.get_num_threads(),
                    "gpu": torch.cuda.get_device_name(0) if model.device.type == "cuda" else None,
                    "acceleration": asdict(model.acceleration)},
        "model": {"name": model.name, "architecture": model.architecture.value, "version": model.version},
        "settings": {**{k: v for k, v in asdict(bench).items() if k not in ("model", "config")},
                     "steps": steps, "guidance_scale": resolved.guidance_scale, "width": resolved.width,
                     "height": resolved.height, "scheduler": resolved.scheduler},
        "diffusers": {"seconds": plain.seconds, "median_s": plain.median,
                      "images_per_s": plain.images_per_second(bench.batch)},
        "engine": {"seconds": ours.seconds, "median_s": ours.median,
                   "images_per_s": ours.images_per_second(bench.batch)},
        "engine_vs_diffusers": plain.median / ours.median,
        "unet": {"flops_per_step": per_step, "unet_calls_counted": len(flops),
                 "matmul_flops_per_s": matmul, "ideal_denoise_s": ideal,
                 "engine_fraction_of_peak": ideal / ours.median if ours.median else 0.0},
    }
