"""JPEG bytes of stored images for the image datasets (``pairs``, ``labels``), read in batches on threads.

The worker stores a JPEG copy beside every image it generates (:func:`store_jpeg_copy`, under
:func:`~imageloop.storage.blobs.jpeg_copy_key`), encoded exactly as the export would encode it, so the export only
copies bytes. Images without a copy (recorded before copies were stored, or whose copy could not be written) are
decoded and re-encoded here instead, with the same bytes as a result, and counted. Pillow's decoder and encoder and
the blob store's reads release the GIL, so a few threads fetch batches in parallel while the export thread keeps
building rows; batches come back in the order they were added, so rows are written in the same order as a
one-by-one conversion would write them.
"""

from __future__ import annotations

import io
import logging
import os
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

from imageloop.errors import NotFoundError, StorageError
from imageloop.storage.blobs import BlobStore, jpeg_copy_key

JPEG_QUALITY = 95
MAX_WORKERS = 8

Item = TypeVar("Item")
Converted = dict[str, bytes | None]  # blob key -> JPEG bytes, None where the blob store has no such key

log = logging.getLogger(__name__)


def to_jpeg(image_bytes: bytes, quality: int = JPEG_QUALITY) -> bytes:
    """``image_bytes`` (any format Pillow reads) re-encoded as an RGB JPEG."""
    from PIL import Image as PILImage

    with PILImage.open(io.BytesIO(image_bytes)) as image:
        out = io.BytesIO()
        image.convert("RGB").save(out, format="JPEG", quality=quality)
        return out.getvalue()


def store_jpeg_copy(blobs: BlobStore, image_key: str, image_bytes: bytes) -> bool:
    """Store the JPEG encoding of the image under ``image_key`` beside it; False (logged) where that failed.

    The copy only saves the export a conversion, so bytes Pillow cannot read or a failed write lose no image.
    Storing it again writes the same bytes under the same key.
    """
    try:
        jpeg = to_jpeg(image_bytes)
    except (OSError, ValueError) as exc:  # PIL.UnidentifiedImageError is an OSError
        log.warning("no JPEG copy of %s: %s", image_key, exc)
        return False
    try:
        blobs.put(jpeg_copy_key(image_key), jpeg, "image/jpeg")
    except StorageError as exc:
        log.warning("could not store the JPEG copy of %s: %s", image_key, exc.message)
        return False
    return True


def stored_jpeg(blobs: BlobStore, image_key: str) -> tuple[bytes, bool]:
    """The JPEG bytes of the image under ``image_key``, and whether they had to be transcoded (no stored copy).

    Raises NotFoundError when neither the copy nor the image is stored.
    """
    try:
        return blobs.get(jpeg_copy_key(image_key)), False
    except NotFoundError:
        return to_jpeg(blobs.get(image_key)), True


def default_workers() -> int:
    """One conversion thread per CPU this process may run on (at most MAX_WORKERS)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()  # not on macOS
    return max(1, min(MAX_WORKERS, cpus or 1))


class JpegBatches(Generic[Item]):
    """Fetches the JPEGs of batches of items on a few threads; hands the batches back, in order, with the bytes.

    :meth:`add` queues a batch of items with the blob keys they need and returns the batches that are done (often
    none); :meth:`drain` returns the rest. Each comes back as ``(items, jpegs)``, ``jpegs`` mapping every key of
    the batch to its JPEG bytes, or to ``None`` where the blob store has no such key; any other failure of the blob
    store is raised by the call that would return the batch.
    """

    def __init__(self, blobs: BlobStore, workers: int | None = None) -> None:
        self._blobs = blobs
        self.transcoded = 0  # images of the batches handed back that had no stored JPEG copy
        workers = workers or default_workers()
        self._ahead = workers  # batches converting at once: one per thread
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="imageloop-export-jpeg")
        self._in_flight: deque[tuple[list[Item], Future[tuple[Converted, int]]]] = deque()

    def add(self, items: list[Item], keys: Iterable[str]) -> list[tuple[list[Item], Converted]]:
        # Each distinct key is read once per batch, however many items need it.
        self._in_flight.append((items, self._pool.submit(self._convert, dict.fromkeys(keys))))
        done: list[tuple[list[Item], Converted]] = []
        while len(self._in_flight) > self._ahead:
            done.append(self._collect())
        return done

    def drain(self) -> list[tuple[list[Item], Converted]]:
        done: list[tuple[list[Item], Converted]] = []
        while self._in_flight:
            done.append(self._collect())
        return done

    def close(self) -> None:
        """Stop the threads (queued conversions are dropped)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _collect(self) -> tuple[list[Item], Converted]:
        items, future = self._in_flight.popleft()
        converted, transcoded = future.result()
        self.transcoded += transcoded
        return items, converted

    def _convert(self, keys: Iterable[str]) -> tuple[Converted, int]:
        converted: Converted = {}
        transcoded = 0
        for key in keys:
            try:
                converted[key], fallback = stored_jpeg(self._blobs, key)
                transcoded += fallback
            except NotFoundError:
                converted[key] = None
        return converted, transcoded
