"""Per-step progress reports and cooperative cancellation of a generation.

The engine calls a :class:`StepCallback` after every denoising step with ``(step, total)``; returning ``False``
asks the engine to stop. A :class:`CancelToken` does the same from another thread (the server's cancel button).
Either way the run ends with :class:`imageloop.errors.GenerationCancelled` and no image.

One step of a large image can take minutes on a CPU, so a stop is also looked for inside a step: before each
resnet, attention and resampling block of the UNet (and ControlNet) runs, the token and, for a callback that is
an :class:`InterruptibleStepCallback`, its ``stop_requested()`` are checked (:meth:`StepReporter.inside`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, runtime_checkable

from imageloop.errors import GenerationCancelled


class StepCallback(Protocol):
    """Called after each denoising step; ``step`` counts from 1 to ``total``. Return False to stop the run."""

    def __call__(self, step: int, total: int) -> bool | None: ...


@runtime_checkable
class InterruptibleStepCallback(StepCallback, Protocol):
    """A step callback that can also be asked, while a step runs, whether the run should stop."""

    def stop_requested(self) -> bool: ...


# The parts of a diffusers UNet or ControlNet block that run one after another: a stop is checked before each.
_BLOCK_PARTS = ("resnets", "attentions", "downsamplers", "upsamplers")


def _block_parts(model: Any) -> Iterator[Any]:
    blocks = [*(getattr(model, "down_blocks", None) or []), getattr(model, "mid_block", None),
              *(getattr(model, "up_blocks", None) or [])]
    for block in blocks:
        for name in _BLOCK_PARTS:
            yield from getattr(block, name, None) or []
    # A FLUX.1 / SD3 transformer: its blocks run one after another.
    yield from getattr(model, "transformer_blocks", None) or []
    yield from getattr(model, "single_transformer_blocks", None) or []


class CancelToken:
    """A thread-safe flag: ``cancel()`` from anywhere; the running generation stops after its current step."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        """Ask the run holding this token to stop."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        """Whether ``cancel()`` has been called."""
        return self._event.is_set()


class StepReporter:
    """Adapts a StepCallback and a CancelToken to diffusers' ``callback_on_step_end`` hook.

    diffusers calls the hook with the pipeline after each step; setting ``pipe._interrupt`` makes the pipeline skip
    the remaining steps (its documented cancel mechanism). :meth:`raise_if_stopped` turns that into an error.
    """

    def __init__(self, on_step: StepCallback | None, cancel: CancelToken | None) -> None:
        self._on_step = on_step
        self._cancel = cancel
        self._probe = on_step if isinstance(on_step, InterruptibleStepCallback) else None
        self.stopped = False
        self.steps = 0

    def raise_if_stopped(self) -> None:
        """Raise GenerationCancelled if the callback or the token asked for a stop (also before the run starts)."""
        if self.stopped or (self._cancel is not None and self._cancel.cancelled):
            self.stopped = True
            raise GenerationCancelled("generation cancelled; no image was produced")

    def raise_if_stopped_inside_step(self) -> None:
        """Raise GenerationCancelled if the token, or the callback's ``stop_requested()``, asks for a stop now."""
        if self._probe is not None and not self.stopped and self._probe.stop_requested():
            self.stopped = True
        self.raise_if_stopped()

    @contextmanager
    def inside(self, *models: Any) -> Iterator[None]:
        """While the ``with`` block runs, check for a stop before each block part of ``models`` (UNet, ControlNet;
        None is skipped) runs: a cancel takes effect within one block's work, not one whole step's."""
        handles = [part.register_forward_pre_hook(lambda _module, _args: self.raise_if_stopped_inside_step())
                   for model in models if model is not None for part in _block_parts(model)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def hook(self, done: int = 0, later: int = 0) -> Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]:
        """The function to pass as ``callback_on_step_end``. A run of several pipeline calls (hires fix) counts on:
        ``done`` steps came before this call, ``later`` steps follow it; :attr:`steps` is the count so far."""

        def on_step_end(pipe: Any, index: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            total = done + int(getattr(pipe, "num_timesteps", 0) or index + 1) + later
            self.steps = done + index + 1
            keep_going = self._on_step(self.steps, total) if self._on_step is not None else None
            if keep_going is False or (self._cancel is not None and self._cancel.cancelled):
                self.stopped = True
                pipe._interrupt = True
            return tensors

        return on_step_end


class RunClock:
    """How long each stage of a run took: ``lap(name)`` ends a stage, ``total()`` adds the whole run."""

    def __init__(self, timings: dict[str, float]) -> None:
        self.timings = timings
        self.start = self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = now - self.last
        self.last = now

    def total(self) -> dict[str, float]:
        return {**self.timings, "total": time.perf_counter() - self.start}
