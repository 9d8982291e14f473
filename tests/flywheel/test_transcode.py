from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from imageloop.bench.event_images import SyntheticImageStore
from imageloop.errors import NotFoundError, StorageError
from imageloop.flywheel.transcode import JpegBatches, store_jpeg_copy, stored_jpeg, to_jpeg
from imageloop.storage.blobs import BlobStore, LocalBlobStore, jpeg_copy_key


class _Store(SyntheticImageStore):
    """Synthetic images, except one image (and its JPEG copy) that fails the way a broken store does."""

    def get(self, key: str) -> bytes:
        if key.startswith("images/broken/"):
            raise StorageError("disk on fire")
        return super().get(key)


def test_to_jpeg_reencodes_as_rgb_jpeg() -> None:
    png = SyntheticImageStore(pool_size=1).get("images/a/0.png")
    jpeg = to_jpeg(png)
    assert jpeg[:2] == b"\xff\xd8"
    with Image.open(io.BytesIO(jpeg)) as image:
        assert image.format == "JPEG" and image.mode == "RGB" and image.size == (64, 64)


@pytest.mark.parametrize("workers", [1, 3])
def test_batches_come_back_in_order_with_their_bytes(workers: int) -> None:
    store: BlobStore = SyntheticImageStore(pool_size=5)
    batches: JpegBatches[int] = JpegBatches(store, workers=workers)
    keys = [(f"images/g{i}/0.png", f"images/g{i % 3}/1.png") for i in range(23)]
    done = []
    for start in range(0, 23, 4):
        items = list(range(start, min(start + 4, 23)))
        done += batches.add(items, (key for i in items for key in keys[i]))
        assert len(done) >= start // 4 + 1 - workers  # at most one batch per thread still converting
    done += batches.drain()
    batches.close()
    assert [item for items, _ in done for item in items] == list(range(23))
    for items, jpegs in done:
        assert set(jpegs) == {key for i in items for key in keys[i]}
        assert all(jpegs[key] == to_jpeg(store.get(key)) for key in jpegs)


def test_a_missing_key_gives_none_and_a_failing_store_raises() -> None:
    batches: JpegBatches[str] = JpegBatches(_Store(pool_size=1), workers=2)
    assert batches.add(["missing"], ["images/a/0.png", "not-an-image-key"]) == []
    [(items, jpegs)] = batches.drain()
    assert items == ["missing"] and jpegs["images/a/0.png"] is not None and jpegs["not-an-image-key"] is None
    batches.add(["broken"], ["images/broken/0.png"])
    with pytest.raises(StorageError, match="disk on fire"):
        batches.drain()
    batches.close()
    with pytest.raises(NotFoundError):
        SyntheticImageStore(pool_size=1).get("other/key")


@pytest.mark.parametrize("copies", [True, False])
def test_stored_copies_are_read_and_missing_ones_transcoded_to_the_same_bytes(copies: bool) -> None:
    store = SyntheticImageStore(pool_size=3, jpeg_copies=copies)
    batches: JpegBatches[int] = JpegBatches(store, workers=2)
    keys = [(f"images/g{i}/0.png", f"images/g{i % 2}/1.png") for i in range(5)]
    done = []
    for items in ([0, 1], [2, 3], [4]):
        done += batches.add(items, (key for i in items for key in keys[i]))
    done += batches.drain()
    batches.close()
    assert [jpegs for _, jpegs in done] == [{key: to_jpeg(store.get(key)) for i in items for key in keys[i]}
                                           for items in ([0, 1], [2, 3], [4])]
    distinct_per_batch = 4 + 4 + 2  # g0,g1 / g2,g3 (with g0/1, g1/1) / g4 (with g0/1): each key read once a batch
    assert batches.transcoded == (0 if copies else distinct_per_batch)


def test_the_synthetic_store_answers_jpeg_copies_of_its_pngs() -> None:
    store = SyntheticImageStore(pool_size=3)
    png = store.get("images/g/0.png")
    assert store.get(jpeg_copy_key("images/g/0.png")) == to_jpeg(png)
    assert stored_jpeg(store, "images/g/0.png") == (to_jpeg(png), False)
    assert stored_jpeg(SyntheticImageStore(pool_size=3, jpeg_copies=False), "images/g/0.png") == (to_jpeg(png), True)
    assert not SyntheticImageStore(pool_size=3, jpeg_copies=False).exists("images/g/0.jpg")
    assert not store.exists("other/0.jpg")


def test_a_jpeg_copy_is_stored_beside_the_image_and_unreadable_bytes_store_none(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path)
    png = SyntheticImageStore(pool_size=1).get("images/a/0.png")
    assert store_jpeg_copy(blobs, "images/a/0.png", png)
    assert blobs.get("images/a/0.jpg") == to_jpeg(png)
    assert not store_jpeg_copy(blobs, "images/b/0.png", b"not an image")
    assert not blobs.exists("images/b/0.jpg")
