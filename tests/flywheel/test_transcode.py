from __future__ import annotations

import io

import pytest
from PIL import Image

from imageloop.bench.event_images import SyntheticImageStore
from imageloop.errors import NotFoundError, StorageError
from imageloop.flywheel.transcode import JpegBatches, to_jpeg
from imageloop.storage.blobs import BlobStore


class _Store(SyntheticImageStore):
    """Synthetic images, except one key that fails the way a broken store does."""

    def get(self, key: str) -> bytes:
        if key == "images/broken/0.png":
            raise StorageError("disk on fire")
        return super().get(key)


def test_to_jpeg_reencodes_as_rgb_jpeg() -> None:
    png = SyntheticImageStore(pool_size=1).get("images/a/0.png")
    jpeg = to_jpeg(png)
    assert jpeg[:2] == b"\xff\xd8"
    with Image.open(io.BytesIO(jpeg)) as image:
        assert image.format == "JPEG" and image.mode == "RGB" and image.size == (64, 64)


@pytest.mark.parametrize("workers", [1, 3])
def test_items_come_back_in_order_with_their_bytes(workers: int) -> None:
    store: BlobStore = SyntheticImageStore(pool_size=5)
    batches: JpegBatches[int] = JpegBatches(store, batch=4, workers=workers)
    keys = [(f"images/g{i}/0.png", f"images/g{i % 3}/1.png") for i in range(23)]
    done = []
    for i, pair in enumerate(keys):
        done += batches.add(i, pair)
    done += batches.drain()
    batches.close()
    assert [item for item, _ in done] == list(range(23))
    for (_, jpegs), pair in zip(done, keys, strict=True):
        assert jpegs == [to_jpeg(store.get(key)) for key in pair]


def test_a_missing_key_gives_none_and_a_failing_store_raises() -> None:
    batches: JpegBatches[str] = JpegBatches(_Store(pool_size=1), batch=2, workers=2)
    assert batches.add("missing", ("images/a/0.png", "not-an-image-key")) == []
    [(item, jpegs)] = batches.drain()
    assert item == "missing" and jpegs[0] is not None and jpegs[1] is None
    batches.add("broken", ("images/broken/0.png",))
    with pytest.raises(StorageError, match="disk on fire"):
        batches.drain()
    batches.close()
    with pytest.raises(NotFoundError):
        SyntheticImageStore(pool_size=1).get("other/key")
