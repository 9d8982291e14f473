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


@pytest.mark.parametrize("copies", [True, False])
def test_stored_copies_are_read_and_missing_ones_transcoded_to_the_same_bytes(copies: bool) -> None:
    store = SyntheticImageStore(pool_size=3, jpeg_copies=copies)
    batches: JpegBatches[int] = JpegBatches(store, batch=2, workers=2)
    keys = [(f"images/g{i}/0.png", f"images/g{i % 2}/1.png") for i in range(5)]
    done = [d for i, pair in enumerate(keys) for d in batches.add(i, pair)] + batches.drain()
    batches.close()
    assert [jpegs for _, jpegs in done] == [[to_jpeg(store.get(key)) for key in pair] for pair in keys]
    distinct_per_batch = 4 + 4 + 2  # batches of two pairs: g0,g1 / g2,g3 (with g0/1, g1/1) / g4 (with g0/1)
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
