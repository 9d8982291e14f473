"""In-memory LRU caches: prompt encodings and finished results; and which models the process keeps loaded.

The caches are bounded (sizes from settings; 0 disables a cache) and thread-safe, and count hits and misses so tests
and the metrics endpoint can see them work.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True)
class CacheStats:
    """Counters of one cache."""

    hits: int
    misses: int
    size: int
    capacity: int


class LRUCache(Generic[K, V]):
    """A least-recently-used map holding at most ``capacity`` entries (0 = store nothing).

    With ``weigh`` and ``max_weight`` it also keeps the total weight (e.g. bytes) of its entries within
    ``max_weight``; an entry heavier than that on its own is not stored.
    """

    def __init__(self, capacity: int, *, weigh: Callable[[V], int] | None = None, max_weight: int | None = None
                 ) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        if (weigh is None) != (max_weight is None):
            raise ValueError("weigh and max_weight go together")
        self.capacity = capacity
        self._weigh = weigh
        self.max_weight = max_weight
        self._weights: dict[K, int] = {}
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    def get(self, key: K) -> V | None:
        """The value for ``key`` (marking it most recently used), or None."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self._hits += 1
                return self._items[key]
            self._misses += 1
            return None

    def put(self, key: K, value: V) -> None:
        """Store ``value``, evicting the least recently used entries beyond capacity."""
        if self.capacity == 0:
            return
        weight = self._weigh(value) if self._weigh is not None else 0
        if self.max_weight is not None and weight > self.max_weight:
            return
        with self._lock:
            self._items[key] = value
            self._weights[key] = weight
            self._items.move_to_end(key)
            while len(self._items) > self.capacity or (
                self.max_weight is not None and sum(self._weights.values()) > self.max_weight
            ):
                old, _ = self._items.popitem(last=False)
                del self._weights[old]

    def get_or_compute(self, key: K, compute: Callable[[], V]) -> V:
        """The cached value for ``key``, computing and storing it on a miss (compute runs outside the lock)."""
        value = self.get(key)
        if value is None:
            value = compute()
            self.put(key, value)
        return value

    def clear(self) -> None:
        """Drop every entry (counters are kept)."""
        with self._lock:
            self._items.clear()
            self._weights.clear()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    @property
    def stats(self) -> CacheStats:
        """Hits, misses, current size and capacity."""
        with self._lock:
            return CacheStats(self._hits, self._misses, len(self._items), self.capacity)


@dataclass(frozen=True)
class PromptKey:
    """What a prompt encoding depends on: the model version, the active text-encoder adapters, the text, how its
    weights are applied, and which text-encoder layer is read (A1111's clip skip)."""

    model_version: str
    adapters: str
    text: str
    weighting: str = "a1111"
    clip_skip: int = 1


def result_key(canonical_request: str, model_version: str) -> str:
    """The result-cache key: SHA-256 over the model version and the canonical (fully resolved) request."""
    digest = hashlib.sha256()
    digest.update(model_version.encode("utf-8"))
    digest.update(b"\0")
    digest.update(canonical_request.encode("utf-8"))
    return digest.hexdigest()


class HoldsModel(Protocol):
    """An engine as the residency sees it: it can drop its loaded model (reloading it when next used)."""

    def release_model(self) -> None: ...


class ModelResidency:
    """Which models the process keeps loaded, least recently used first, across every engine.

    An engine calls :meth:`admit` before it loads a model: models beyond ``limit`` (0 = no limit) other than the
    one being admitted are released first, each through every engine holding it, so two models' weights are never
    in memory at once unless the limit allows it. Engines of one model (the embedded workers) count as one model.
    Engines are held weakly: an engine nobody uses any more holds nothing.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders: OrderedDict[str, weakref.WeakSet[Any]] = OrderedDict()

    def admit(self, key: str, holder: HoldsModel, limit: int) -> list[str]:
        """Record that ``holder`` loads model ``key`` and release the least recently used other models beyond
        ``limit``; returns the keys released."""
        with self._lock:
            for name in [name for name, holders in self._holders.items() if not holders and name != key]:
                del self._holders[name]
            self._holders.setdefault(key, weakref.WeakSet()).add(holder)
            self._holders.move_to_end(key)
            evicted: list[tuple[str, list[Any]]] = []
            while limit and len(self._holders) > limit:
                name, weak = self._holders.popitem(last=False)
                evicted.append((name, list(weak)))
        for _, released in evicted:  # outside the lock: releasing takes each engine's own lock
            for other in released:
                other.release_model()
        if evicted:
            free_memory()
        return [name for name, _ in evicted]

    def touch(self, key: str) -> None:
        """Mark model ``key`` as just used."""
        with self._lock:
            if key in self._holders:
                self._holders.move_to_end(key)

    def loaded(self) -> list[str]:
        """The models held now, least recently used first."""
        with self._lock:
            return [name for name, holders in self._holders.items() if holders]


def free_memory() -> None:
    """Return released weights to the system: a garbage collection, and CUDA's cached blocks when there is CUDA."""
    import gc

    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


MODEL_RESIDENCY = ModelResidency()  # the process's one record of loaded models
