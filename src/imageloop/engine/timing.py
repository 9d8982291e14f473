"""Time spent inside the denoiser (the UNet, or a FLUX/SD3 transformer), summed over every model this process loads.

The denoiser is the work a server cannot avoid; everything else (queue, database, prompt encoding, VAE decode, PNG,
moderation, HTTP) is overhead. ``imageloop bench throughput`` reads :data:`DENOISER_CLOCK` before and after a run to
report the share of the workers' wall time spent in the denoiser, and ``/metrics`` exports it as a counter.

Timing is by forward hooks: the pre-hook notes the start on the calling thread, the post-hook adds the elapsed time
(several workers call their own models at once, so starts are thread-local and the sum is under a lock). A call that
raises (a cancel) is not counted.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import torch


class DenoiserClock:
    """Seconds and calls of denoiser forward passes, process-wide."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._local = threading.local()
        self._seconds = 0.0
        self._calls = 0

    def attach(self, module: torch.nn.Module) -> None:
        """Time every forward pass of ``module`` from now on."""
        module.register_forward_pre_hook(self._started)
        module.register_forward_hook(self._finished)

    def _started(self, _module: torch.nn.Module, _args: Any) -> None:
        self._local.start = time.perf_counter()

    def _finished(self, _module: torch.nn.Module, _args: Any, _output: Any) -> None:
        start = getattr(self._local, "start", None)
        if start is None:
            return
        elapsed = time.perf_counter() - start
        self._local.start = None
        with self._lock:
            self._seconds += elapsed
            self._calls += 1

    def read(self) -> tuple[float, int]:
        """Seconds spent in denoiser forward passes so far, and how many passes."""
        with self._lock:
            return self._seconds, self._calls


DENOISER_CLOCK = DenoiserClock()
