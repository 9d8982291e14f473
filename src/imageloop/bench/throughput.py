"""``imageloop bench throughput``: concurrent clients through the real HTTP server vs a naive diffusers loop.

The naive path is what one would write without a server: load the pipeline, call it once per request, one request
at a time. The server path is ``imageloop serve`` as shipped (embedded mode: SQLite, local images, the in-process
worker with dynamic batching) on a loopback port, driven by N client threads that each submit a generation, wait
for it on the SSE stream, and submit the next. Both use the same model, steps, CFG, size and sampler, in the same
process and run, warm. Throughput is images per second over the whole run; latency is per request (the naive
path's is its call time, with no queueing counted). On a shared machine the wall-clock ratio moves with other
load, so the CPU time of this process is recorded too and the ratio is also given per CPU-second.

The server denoises under CPU bf16 autocast where ``engine.cpu_autocast`` turns it on (see
:mod:`imageloop.engine.autocast`). So that the batching gain is not confused with the dtype gain, there are two
naive baselines: the plain fp32 loop, and (when the server autocasts) the same loop under the same autocast, with
the same fp32 VAE decode. ``ratio_vs_naive`` is the whole gain over the plain loop, ``ratio_vs_naive_same_dtype``
the server's own (batching, caching) at equal compute dtype, and ``dtype_gain`` the autocast loop over the plain
one. Every path records its weights dtype and autocast.

The server may run several embedded workers (``--workers``, ``jobs.workers``), each with its own engine, and its
own torch thread count (``--threads``, ``engine.threads``): on a few CPU cores a small model runs faster as two
single-threaded generations side by side than as one generation over two threads. The naive loops always run with
torch's default thread count, as a plain script would. Every path records its workers and torch threads.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import torch

from imageloop.config import JobsSettings, Settings
from imageloop.engine.autocast import CpuAutocast, autocast_name, decode_latents, denoise_autocast
from imageloop.engine.engine import Engine
from imageloop.engine.request import GenerationRequest
from imageloop.engine.schedulers import make_scheduler
from imageloop.engine.timing import DENOISER_CLOCK

# The server's images/s over the plain naive loop's, by clients (issue 19): 3x at 8 clients, 3.5x at 32.
TARGET_RATIOS = {"8": 3.0, "32": 3.5}
# Torch's own thread count, before any engine setting changed it: what a plain diffusers script runs with.
TORCH_DEFAULT_THREADS = torch.get_num_threads()
_WORDS = ("cat", "dog", "bird", "house", "tree", "car", "castle", "dragon", "ship", "flower", "river", "mountain")


@dataclass(frozen=True)
class ThroughputConfig:
    """What to measure; ``None`` sampling settings come from the model's defaults."""

    model: str | None = None
    clients: tuple[int, ...] = (8, 32)
    requests_per_client: int = 3
    naive_requests: int = 8
    steps: int | None = None
    guidance_scale: float | None = None
    width: int | None = None
    height: int | None = None
    batch_max_size: int = 16
    batch_max_wait_ms: int = 100
    cpu_autocast: CpuAutocast | None = None  # None: the settings' engine.cpu_autocast
    workers: int | None = None  # the server's embedded workers; None: the settings' jobs.workers
    threads: int | None = None  # the server's torch threads (0 = torch's default); None: the settings' engine.threads


@dataclass(frozen=True)
class PathResult:
    """One measured path: images made, wall seconds, and per-request latencies."""

    path: str
    clients: int
    images: int
    seconds: float
    latencies: list[float] = field(repr=False)
    cpu_seconds: float = 0.0  # CPU time of this whole process meanwhile: robust to other load on the machine
    dtype: str = "float32"  # the weights' dtype
    autocast: str = "off"  # what the denoising ran under: 'bf16' or 'off'
    workers: int = 1  # generations that can run at once (the server's embedded workers; 1 for the naive loop)
    torch_threads: int = 0  # torch's intra-op threads of each of them
    denoiser_seconds: float = 0.0  # time in denoiser (UNet) forward passes meanwhile, summed over workers

    @property
    def denoiser_share(self) -> float:
        """Share of the workers' wall time spent in the denoiser: 1.0 means nothing else cost any time."""
        return self.denoiser_seconds / (self.seconds * self.workers) if self.seconds else 0.0

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    @property
    def images_per_cpu_second(self) -> float:
        return self.images / self.cpu_seconds if self.cpu_seconds else 0.0

    def percentile(self, q: float) -> float:
        """The q-th percentile latency (nearest rank)."""
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))] if ordered else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "clients": self.clients, "images": self.images, "seconds": self.seconds,
                "images_per_s": self.images_per_second, "latency_p50_s": self.percentile(50),
                "latency_p95_s": self.percentile(95), "latency_mean_s": statistics.fmean(self.latencies),
                "cpu_seconds": self.cpu_seconds, "images_per_cpu_s": self.images_per_cpu_second,
                "dtype": self.dtype, "autocast": self.autocast, "workers": self.workers,
                "torch_threads": self.torch_threads, "denoiser_seconds": self.denoiser_seconds,
                "denoiser_share": self.denoiser_share}


def prompt_for(index: int) -> str:
    """Distinct prompts, so no cache answers for free."""
    return f"a {_WORDS[index % len(_WORDS)]} number {index}"


def naive_sampling(engine: Engine, config: ThroughputConfig) -> dict[str, Any]:
    """The sampling settings both paths use (the config's, else the model's defaults) and the model's identity."""
    model = engine.model
    resolved = engine.resolve(GenerationRequest(
        prompt="x", steps=config.steps, guidance_scale=config.guidance_scale, width=config.width,
        height=config.height, seed=0,
    ))
    return {"steps": resolved.steps, "guidance_scale": resolved.guidance_scale, "width": resolved.width,
            "height": resolved.height, "scheduler": resolved.scheduler,
            "model": {"name": model.name, "version": model.version, "device": str(model.device),
                      "dtype": _dtype_name(model.dtype)}}


def run_naive(
    engine: Engine, config: ThroughputConfig, sampling: dict[str, Any], say: Callable[[str], None],
    *, autocast: torch.dtype | None = None,
) -> PathResult:
    """The naive loop: the diffusers pipeline called once per request, one after another; with ``autocast``, the
    denoising runs under it and the VAE decodes in fp32, exactly as the engine does."""
    model = engine.model
    pipe = model.pipe
    pipe.scheduler = make_scheduler(sampling["scheduler"] or "Euler", model.scheduler_config)
    name = "diffusers loop" if autocast is None else "diffusers loop, same dtype"

    def call(index: int) -> None:
        kwargs: dict[str, Any] = {
            "prompt": prompt_for(index), "num_inference_steps": sampling["steps"],
            "guidance_scale": sampling["guidance_scale"], "width": sampling["width"], "height": sampling["height"],
            "generator": torch.Generator("cpu").manual_seed(index),
        }
        if autocast is None:
            pipe(**kwargs, output_type="pil")
            return
        with torch.inference_mode(), denoise_autocast(autocast):
            latents = pipe(**kwargs, output_type="latent").images
        decode_latents(pipe, latents)

    latencies: list[float] = []
    clock: dict[str, float] = {}

    def loop() -> None:
        say(f"{name}: warming up")
        call(10**6)
        clock["start"], clock["cpu_start"] = time.perf_counter(), time.process_time()
        clock["denoiser_start"] = DENOISER_CLOCK.read()[0]
        for index in range(config.naive_requests):
            began = time.perf_counter()
            call(index)
            latencies.append(time.perf_counter() - began)
        clock["seconds"] = time.perf_counter() - clock["start"]
        clock["cpu_seconds"] = time.process_time() - clock["cpu_start"]
        clock["denoiser_seconds"] = DENOISER_CLOCK.read()[0] - clock["denoiser_start"]

    # On the calling (main) thread, as a script would run it: torch's intra-op threads can run a call started
    # from another thread much slower, which would flatter the server.
    loop()
    seconds, cpu_seconds = clock["seconds"], clock["cpu_seconds"]
    say(f"{name}: {config.naive_requests} images in {seconds:.1f} s")
    return PathResult(name, 1, config.naive_requests, seconds, latencies, cpu_seconds,
                      dtype=_dtype_name(model.dtype), autocast=autocast_name(autocast),
                      torch_threads=torch.get_num_threads(), denoiser_seconds=clock["denoiser_seconds"])


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class _Client(threading.Thread):
    """Submits generations one after another and waits for each on its SSE stream."""

    def __init__(self, base_url: str, key: str, indexes: list[int], params: dict[str, Any], go: threading.Event):
        super().__init__(daemon=True)
        self.base_url, self.indexes, self.params, self.go = base_url, indexes, params, go
        self.ready = threading.Event()  # its HTTP client is built (an SSL context each: CPU the run must not count)
        self.headers = {"Authorization": f"Bearer {key}"}
        self.latencies: list[float] = []
        self.images = 0
        self.error: str | None = None

    def run(self) -> None:
        try:
            client = httpx.Client(base_url=self.base_url, headers=self.headers, timeout=600)
        finally:
            self.ready.set()
        with client:
            self.go.wait()
            try:
                for index in self.indexes:
                    began = time.perf_counter()
                    self.images += self._one(client, index)
                    self.latencies.append(time.perf_counter() - began)
            except Exception as exc:  # reported by the bench, not swallowed
                self.error = f"{type(exc).__name__}: {exc}"

    def _one(self, client: httpx.Client, index: int) -> int:
        body = {"prompt": prompt_for(index), "params": {**self.params, "seed": index}}
        response = client.post("/api/v1/generations", json=body)
        response.raise_for_status()
        with client.stream("GET", f"/api/v1/generations/{response.json()['id']}/events") as stream:
            for line in stream.iter_lines():
                if line.startswith("data: ") and '"status":"succeeded"' in line:
                    return 1
                if line.startswith("data: ") and ('"status":"failed"' in line or '"status":"cancelled"' in line):
                    raise RuntimeError(f"generation {index} did not succeed: {line[:300]}")
        raise RuntimeError(f"the event stream of generation {index} ended early")


def run_server(base_url: str, key: str, clients: int, config: ThroughputConfig, params: dict[str, Any],
               first_index: int) -> PathResult:
    """``clients`` concurrent clients, ``requests_per_client`` each, through the HTTP API."""
    go = threading.Event()
    per = config.requests_per_client
    threads = [_Client(base_url, key, [first_index + c * per + r for r in range(per)], params, go)
               for c in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.ready.wait()
    start, cpu_start, denoiser_start = time.perf_counter(), time.process_time(), DENOISER_CLOCK.read()[0]
    go.set()
    for thread in threads:
        thread.join()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    denoiser_seconds = DENOISER_CLOCK.read()[0] - denoiser_start
    errors = [thread.error for thread in threads if thread.error]
    if errors:
        raise RuntimeError(f"{len(errors)} client(s) failed; first: {errors[0]}")
    latencies = [latency for thread in threads for latency in thread.latencies]
    images = sum(thread.images for thread in threads)
    return PathResult("imageloop server", clients, images, seconds, latencies, cpu_seconds,
                      denoiser_seconds=denoiser_seconds)


def wait_until_ready(base_url: str, timeout_s: float = 900.0) -> None:
    """Block until ``/healthz`` says ok, so the measured runs do not share the CPU with start-up's model loading."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=base_url, timeout=30) as client:
        while True:
            response = client.get("/healthz")
            if response.status_code == 200:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server was not ready after {timeout_s:.0f} s: {response.text[:300]}")
            time.sleep(0.5)


def server_settings(settings: Settings, config: ThroughputConfig, data_dir: Path) -> Settings:
    """The bench server's settings: a fresh embedded data dir, the same model and engine settings, and the config's
    workers and threads where it names them."""
    update: dict[str, Any] = {"model": config.model} if config.model is not None else {}
    if config.cpu_autocast is not None:
        update["cpu_autocast"] = config.cpu_autocast
    if config.threads is not None:
        update["threads"] = config.threads
    engine = settings.engine.model_copy(update=update)
    workers = config.workers if config.workers is not None else settings.jobs.workers
    jobs = JobsSettings(mode="embedded", batch_max_size=config.batch_max_size,
                        batch_max_wait_ms=config.batch_max_wait_ms, workers=workers)
    return Settings(data_dir=data_dir, engine=engine, jobs=jobs)


def run_throughput_bench(
    settings: Settings, config: ThroughputConfig, say: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Measure both paths and return the JSON-ready result."""
    from imageloop.server import create_app
    from imageloop.server.background import serve_in_thread
    from imageloop.storage import Storage

    report = say or (lambda _message: None)
    runs: list[PathResult] = []
    threads_before = torch.get_num_threads()
    try:
        with tempfile.TemporaryDirectory(prefix="imageloop-throughput-") as scratch:
            bench_settings = server_settings(settings, config, Path(scratch))
            server_threads = bench_settings.engine.threads or TORCH_DEFAULT_THREADS
            # The naive loops load the model the server will serve, with the server's engine settings (the autocast
            # the server's engine resolves is the one the second baseline runs under) but torch's default threads.
            torch.set_num_threads(TORCH_DEFAULT_THREADS)
            naive_settings = bench_settings.model_copy(
                update={"engine": bench_settings.engine.model_copy(update={"threads": 0})})
            engine = Engine(naive_settings, model=config.model)
            sampling = naive_sampling(engine, config)
            autocast = engine.autocast
            naive = run_naive(engine, config, sampling, report)
            naive_same = (run_naive(engine, config, sampling, report, autocast=autocast)
                          if autocast is not None else None)
            del engine
            params = {key: sampling[key] for key in ("steps", "guidance_scale", "width", "height", "scheduler")}
            storage = Storage.open(bench_settings)
            key = storage.users.create_user("bench")[1]
            storage.close()
            # The server's engines set engine.threads (process-wide) as they load; each worker thread runs with it.
            with serve_in_thread(create_app(bench_settings)) as base_url:
                report("server: waiting for /healthz (models load in the background after start-up)")
                wait_until_ready(base_url)
                report("server: warming up")
                # One request per worker at once: each worker's engine makes its first (slower) call here.
                workers = bench_settings.jobs.workers
                run_server(base_url, key, workers, ThroughputConfig(requests_per_client=1), params, 10**6)
                next_index = 0
                for clients in config.clients:
                    report(f"server: {clients} clients x {config.requests_per_client} requests")
                    run = run_server(base_url, key, clients, config, params, next_index)
                    runs.append(dataclasses.replace(run, dtype=naive.dtype, autocast=autocast_name(autocast),
                                                    workers=workers, torch_threads=server_threads))
                    next_index += clients * config.requests_per_client
                    report(f"server: {runs[-1].images} images in {runs[-1].seconds:.1f} s")
    finally:  # the engines changed torch's process-wide thread count
        torch.set_num_threads(threads_before)
    same = naive_same or naive  # without autocast the plain loop already computes as the server does
    ratios = {str(run.clients): run.images_per_second / naive.images_per_second for run in runs}
    cpu_ratios = {str(run.clients): run.images_per_cpu_second / naive.images_per_cpu_second for run in runs}
    same_ratios = {str(run.clients): run.images_per_second / same.images_per_second for run in runs}
    same_cpu_ratios = {str(run.clients): run.images_per_cpu_second / same.images_per_cpu_second for run in runs}
    return {
        "benchmark": "throughput",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "torch_default_threads": TORCH_DEFAULT_THREADS, "load_average": list(_load_average())},
        "config": {**asdict(config), "clients": list(config.clients)},
        "sampling": sampling,
        "compute": {"server": _compute(runs[0]) if runs else None, "naive": _compute(naive),
                    "naive_same_dtype": _compute(same)},
        "naive": naive.to_json(),
        # The naive loop under the server's autocast (null when the server does not autocast: then "naive" is it).
        "naive_same_dtype": naive_same.to_json() if naive_same is not None else None,
        "server": [run.to_json() for run in runs],
        "ratio_vs_naive": ratios,
        # Images per CPU-second of this process (server and its clients included) against the naive loop's: the
        # same comparison, insensitive to other processes taking the CPU from one phase and not the other.
        "cpu_ratio_vs_naive": cpu_ratios,
        # The server against the naive loop at the same compute dtype: the batching/caching gain alone.
        "ratio_vs_naive_same_dtype": same_ratios,
        "cpu_ratio_vs_naive_same_dtype": same_cpu_ratios,
        # The autocast loop against the plain one: the dtype gain alone (1.0 without autocast).
        "dtype_gain": same.images_per_second / naive.images_per_second,
        "cpu_dtype_gain": same.images_per_cpu_second / naive.images_per_cpu_second,
        "target_ratios": TARGET_RATIOS,
        "targets_met": {clients: ratios[clients] >= target for clients, target in TARGET_RATIOS.items()
                        if clients in ratios},
    }


def _compute(run: PathResult) -> dict[str, Any]:
    """How a path computed: weights dtype, autocast, generations at once and torch threads of each."""
    return {"dtype": run.dtype, "autocast": run.autocast, "workers": run.workers, "torch_threads": run.torch_threads}


def _load_average() -> tuple[float, float, float]:
    return os.getloadavg()
