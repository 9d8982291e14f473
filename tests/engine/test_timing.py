"""The denoiser clock: forward passes timed per thread, summed process-wide."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from imageloop.engine.timing import DenoiserClock


class _Slow(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.05)
        return x


class _Fails(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("cancelled")


def test_passes_on_several_threads_add_up() -> None:
    clock, module = DenoiserClock(), _Slow()
    clock.attach(module)
    threads = [threading.Thread(target=module, args=(torch.zeros(1),)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds, calls = clock.read()
    assert calls == 4 and 0.2 <= seconds < 1.0  # four overlapping 50 ms passes count 200 ms, not their wall time


def test_a_pass_that_raises_is_not_counted() -> None:
    clock, module = DenoiserClock(), _Fails()
    clock.attach(module)
    with pytest.raises(RuntimeError):
        module(torch.zeros(1))
    assert clock.read() == (0.0, 0)
