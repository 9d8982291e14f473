"""Which trained versions answer a request: the registry's release state, cached for serving code.

- :class:`ExpanderRouting` (prompt expander adapters): the local-LLM strategy asks :meth:`ExpanderRouting.adapter_for`
  with the user's id and gets the A/B candidate for a stable ``traffic_share`` of users, else the promoted adapter,
  else None (the base model). It loads that folder as a PEFT adapter (one per version, e.g.
  ``model.load_adapter(path, adapter_name=tag)``) and puts ``tag`` into the expansion's ``version`` string.
- :class:`GeneratorRouting` (Diffusion-DPO LoRAs of the generator): the worker asks :meth:`GeneratorRouting.lora_for`
  the same way and attaches the answer to the engine request (``GenerationRequest.with_base_lora``); the engine
  applies it only on the model version it was trained on, on top of the request's recipe, and appends ``tag`` to
  the generation's ``base_model_version``.

Either way :meth:`Registry.decide_ab_test` can then measure each arm's keep rate. The release state is re-read at
most every ``ttl`` seconds, so a promotion or rollback reaches servers quickly without a database query per request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from imageloop.engine.recipes import LORA_FILE
from imageloop.engine.request import BaseLora
from imageloop.training.registry import ModelKind, ModelVersion, Registry, bucket

__all__ = ["ExpanderRouting", "GeneratorRouting", "ServedAdapter"]


@dataclass(frozen=True, slots=True)
class ServedAdapter:
    """An adapter to serve: its registry version, the tag to record, and its folder (PEFT format)."""

    version_id: str
    tag: str
    path: Path


class _Routing:
    """Maps users to the versions of one kind by the registry's current release state (thread-safe)."""

    kind: ModelKind

    def __init__(self, registry: Registry, *, ttl: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = registry  # the process's registry (built once at start-up)
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()
        self._loaded_at = -float("inf")
        self._current: ModelVersion | None = None
        self._candidate: ModelVersion | None = None

    def version_for(self, user_id: str | None) -> ModelVersion | None:
        """The version serving ``user_id`` (anonymous requests get the current one); None = the base model."""
        current, candidate = self._state()
        if candidate is not None and user_id is not None and \
                bucket(f"{candidate.id}:{user_id}") < candidate.traffic_share:
            return candidate
        return current

    def refresh(self) -> None:
        """Re-read the release state now."""
        current = self.registry.current(self.kind)
        candidate = self.registry.ab_test(self.kind)
        with self._lock:
            self._current, self._candidate, self._loaded_at = current, candidate, self.clock()

    def _state(self) -> tuple[ModelVersion | None, ModelVersion | None]:
        with self._lock:
            fresh = self.clock() - self._loaded_at < self.ttl
        if not fresh:
            self.refresh()
        with self._lock:
            return self._current, self._candidate


class ExpanderRouting(_Routing):
    """Maps users to expander adapters."""

    kind = ModelKind.EXPANDER

    def adapter_for(self, user_id: str | None) -> ServedAdapter | None:
        """The adapter for ``user_id`` (anonymous requests get the current one), or None for the base model."""
        chosen = self.version_for(user_id)
        if chosen is None:
            return None
        return ServedAdapter(chosen.id, chosen.tag, self.registry.path(chosen))


class GeneratorRouting(_Routing):
    """Maps users to the generator's Diffusion-DPO LoRA."""

    kind = ModelKind.DIFFUSION_DPO

    def lora_for(self, user_id: str | None) -> BaseLora | None:
        """The LoRA to apply to ``user_id``'s generations (on the model version it names), or None."""
        chosen = self.version_for(user_id)
        if chosen is None:
            return None
        model_version = str(chosen.metrics.get("base_model_version", ""))
        path = self.registry.path(chosen) / LORA_FILE
        if not model_version or not path.is_file():
            return None
        return BaseLora(file=str(path), tag=chosen.tag, model_version=model_version)
