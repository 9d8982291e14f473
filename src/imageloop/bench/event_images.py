"""Image bytes for ``imageloop bench events``: a read-only blob store that answers every image key with a real PNG.

A million-event record holds about a million images; writing that many files would measure the file system, not
the export. Instead each key gets one of a small pool of 64×64 PNGs (the embedded model's native size, with an
A1111 ``parameters`` text chunk like the ones the server writes), picked by a hash of the key. Like the worker, the
store also holds each image's JPEG copy (:func:`~imageloop.storage.blobs.jpeg_copy_key`, encoded as the worker
encodes it), so the export copies bytes as it does on a real record; only the file read is left out. Without copies
(``jpeg_copies=False``: a record written before the worker stored them) the export decodes and re-encodes every
distinct image it meets.
"""

from __future__ import annotations

import io
import zlib

from imageloop.errors import NotFoundError, StorageError
from imageloop.flywheel.transcode import to_jpeg
from imageloop.storage.blobs import BlobStore, jpeg_copy_key

IMAGE_SIZE = 64
POOL_SIZE = 64


def synthetic_png(seed: int, size: int = IMAGE_SIZE) -> bytes:
    """A smooth random RGB PNG (a blurred colour field: it compresses like a generated picture, not like noise)."""
    import numpy as np
    from PIL import Image, PngImagePlugin

    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    image = coarse.resize((size, size), Image.Resampling.BICUBIC)
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", f"synthetic image {seed}\nSteps: 20, Sampler: DDIM, Seed: {seed}, Size: {size}x{size}")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


class SyntheticImageStore(BlobStore):
    """Every ``images/....png`` key holds one of ``pool_size`` PNGs and (with ``jpeg_copies``) its JPEG copy key the
    JPEG of that PNG; other keys are missing. Writes are refused."""

    def __init__(self, pool_size: int = POOL_SIZE, *, jpeg_copies: bool = True) -> None:
        self._pool = [synthetic_png(seed) for seed in range(pool_size)]
        self._jpegs = [to_jpeg(png) for png in self._pool] if jpeg_copies else []

    def get(self, key: str) -> bytes:
        if key.startswith("images/") and key.endswith(".png"):
            return self._pool[self._index(key)]
        image_key = key.removesuffix(".jpg") + ".png"
        if self._jpegs and key.startswith("images/") and jpeg_copy_key(image_key) == key:
            return self._jpegs[self._index(image_key)]
        raise NotFoundError(f"blob {key!r} not found")

    def exists(self, key: str) -> bool:
        try:
            self.get(key)
        except NotFoundError:
            return False
        return True

    def _index(self, image_key: str) -> int:
        return zlib.crc32(image_key.encode()) % len(self._pool)

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        raise StorageError(f"the synthetic image store is read-only (cannot write {key!r})")

    def delete(self, key: str) -> None:
        raise StorageError(f"the synthetic image store is read-only (cannot delete {key!r})")
