"""Image bytes for ``imageloop bench events``: a read-only blob store that answers every image key with a real PNG.

A million-event record holds about a million images; writing that many files would measure the file system, not
the export. Instead each key gets one of a small pool of 64×64 PNGs (the embedded model's native size, with an
A1111 ``parameters`` text chunk like the ones the server writes), picked by a hash of the key. The export still
decodes and re-encodes every distinct key it meets, which is the cost the ``pairs`` dataset pays on a real record;
only the file read is left out.
"""

from __future__ import annotations

import io
import zlib

from imageloop.errors import NotFoundError, StorageError
from imageloop.storage.blobs import BlobStore

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
    """Every ``images/...`` key holds one of ``pool_size`` PNGs; other keys are missing. Writes are refused."""

    def __init__(self, pool_size: int = POOL_SIZE) -> None:
        self._pool = [synthetic_png(seed) for seed in range(pool_size)]

    def get(self, key: str) -> bytes:
        if not key.startswith("images/"):
            raise NotFoundError(f"blob {key!r} not found")
        return self._pool[zlib.crc32(key.encode()) % len(self._pool)]

    def exists(self, key: str) -> bool:
        return key.startswith("images/")

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        raise StorageError(f"the synthetic image store is read-only (cannot write {key!r})")

    def delete(self, key: str) -> None:
        raise StorageError(f"the synthetic image store is read-only (cannot delete {key!r})")
