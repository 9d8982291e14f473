"""Which trained expander adapter answers a request: the registry's release state, cached for serving code.

The local-LLM strategy asks :meth:`ExpanderRouting.adapter_for` with the user's id: it gets the A/B candidate for
a stable ``traffic_share`` of users, else the promoted adapter, else None (the base model). It should load that
folder as a PEFT adapter (one per version, e.g. ``model.load_adapter(path, adapter_name=tag)``) and put ``tag``
into the expansion's ``version`` string, so that :meth:`Registry.decide_ab_test` can measure each arm's keep rate.
The release state is re-read at most every ``ttl`` seconds, so a promotion or rollback reaches servers quickly
without a database query per request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from imageloop.config import Settings
from imageloop.storage.db import SessionFactory
from imageloop.training.registry import ModelKind, ModelVersion, Registry, bucket

__all__ = ["ExpanderRouting", "ServedAdapter"]


@dataclass(frozen=True, slots=True)
class ServedAdapter:
    """An adapter to serve: its registry version, the tag to record, and its folder (PEFT format)."""

    version_id: str
    tag: str
    path: Path


class ExpanderRouting:
    """Maps users to expander adapters by the registry's current release state (thread-safe)."""

    def __init__(
        self, sessions: SessionFactory, settings: Settings, *, ttl: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = Registry(sessions, settings)
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()
        self._loaded_at = -float("inf")
        self._current: ModelVersion | None = None
        self._candidate: ModelVersion | None = None

    def adapter_for(self, user_id: str | None) -> ServedAdapter | None:
        """The adapter for ``user_id`` (anonymous requests get the current one), or None for the base model."""
        current, candidate = self._state()
        chosen = current
        if candidate is not None and user_id is not None and \
                bucket(f"{candidate.id}:{user_id}") < candidate.traffic_share:
            chosen = candidate
        if chosen is None:
            return None
        return ServedAdapter(chosen.id, chosen.tag, self.registry.path(chosen))

    def refresh(self) -> None:
        """Re-read the release state now."""
        current = self.registry.current(ModelKind.EXPANDER)
        candidate = self.registry.ab_test(ModelKind.EXPANDER)
        with self._lock:
            self._current, self._candidate, self._loaded_at = current, candidate, self.clock()

    def _state(self) -> tuple[ModelVersion | None, ModelVersion | None]:
        with self._lock:
            fresh = self.clock() - self._loaded_at < self.ttl
        if not fresh:
            self.refresh()
        with self._lock:
            return self._current, self._candidate
