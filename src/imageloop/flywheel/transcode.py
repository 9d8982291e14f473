"""JPEG bytes of stored images for the image datasets (``pairs``, ``labels``), converted in batches on threads.

Turning a stored PNG into JPEG is most of the cost of an image dataset: every judged image is decoded and
re-encoded once. Pillow's decoder and encoder release the GIL, so a few threads convert batches in parallel while
the export thread keeps building rows; batches come back in the order they were queued, so rows are written in the
same order as a one-by-one conversion would write them, with the same bytes.
"""

from __future__ import annotations

import io
import os
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

from imageloop.errors import NotFoundError
from imageloop.storage.blobs import BlobStore

JPEG_QUALITY = 95
MAX_WORKERS = 8

Item = TypeVar("Item")
Converted = dict[str, bytes | None]  # blob key -> JPEG bytes, None where the blob store has no such key


def to_jpeg(image_bytes: bytes, quality: int = JPEG_QUALITY) -> bytes:
    """``image_bytes`` (any format Pillow reads) re-encoded as an RGB JPEG."""
    from PIL import Image as PILImage

    with PILImage.open(io.BytesIO(image_bytes)) as image:
        out = io.BytesIO()
        image.convert("RGB").save(out, format="JPEG", quality=quality)
        return out.getvalue()


def default_workers() -> int:
    """One conversion thread per CPU this process may run on (at most MAX_WORKERS)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()  # not on macOS
    return max(1, min(MAX_WORKERS, cpus or 1))


class JpegBatches(Generic[Item]):
    """Queues items that need JPEGs of some blob keys; hands them back, in order, with the bytes.

    :meth:`add` queues an item with its keys and returns the items whose batch is done (often none);
    :meth:`drain` returns the rest. A missing blob gives ``None`` for that key; any other failure of the blob store
    is raised by the call that would return the item.
    """

    def __init__(self, blobs: BlobStore, batch: int, workers: int | None = None) -> None:
        self._blobs = blobs
        self._batch = batch
        workers = workers or default_workers()
        self._ahead = workers  # batches converting at once: one per thread
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="imageloop-export-jpeg")
        self._queued: list[tuple[Item, tuple[str, ...]]] = []
        self._in_flight: deque[tuple[list[tuple[Item, tuple[str, ...]]], Future[Converted]]] = deque()

    def add(self, item: Item, keys: tuple[str, ...]) -> list[tuple[Item, list[bytes | None]]]:
        self._queued.append((item, keys))
        if len(self._queued) >= self._batch:
            self._submit()
        done: list[tuple[Item, list[bytes | None]]] = []
        while len(self._in_flight) > self._ahead:
            done += self._collect()
        return done

    def drain(self) -> list[tuple[Item, list[bytes | None]]]:
        self._submit()
        done: list[tuple[Item, list[bytes | None]]] = []
        while self._in_flight:
            done += self._collect()
        return done

    def close(self) -> None:
        """Stop the threads (queued conversions are dropped)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _submit(self) -> None:
        if self._queued:
            keys = dict.fromkeys(key for _, item_keys in self._queued for key in item_keys)
            self._in_flight.append((self._queued, self._pool.submit(self._convert, keys)))
            self._queued = []

    def _collect(self) -> list[tuple[Item, list[bytes | None]]]:
        items, future = self._in_flight.popleft()
        converted = future.result()
        return [(item, [converted[key] for key in keys]) for item, keys in items]

    def _convert(self, keys: Iterable[str]) -> Converted:
        converted: Converted = {}
        for key in keys:
            try:
                converted[key] = to_jpeg(self._blobs.get(key))
            except NotFoundError:
                converted[key] = None
        return converted
