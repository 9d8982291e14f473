from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from imageloop.config import Settings
from imageloop.errors import InvalidRequestError, NotFoundError
from imageloop.storage import BlobStore, LocalBlobStore, S3BlobStore, blob_store_from_settings, image_blob_key
from tests.storage.s3 import moto_s3_server


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3_server() as endpoint:
        yield endpoint


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        return LocalBlobStore(tmp_path / "blobs")
    endpoint = request.getfixturevalue("s3_endpoint")
    settings = Settings(
        data_dir=tmp_path, blob_store="s3",
        s3={"endpoint_url": endpoint, "bucket": f"b-{tmp_path.name[-20:].lower().replace('_', '-')}",
            "access_key_id": "test", "secret_access_key": "test", "prefix": "pre/"},
    )
    made = blob_store_from_settings(settings, create_bucket=True)
    assert isinstance(made, S3BlobStore)
    return made


def test_put_get_exists_delete(store: BlobStore) -> None:
    key = image_blob_key("g1", 0)
    assert not store.exists(key)
    store.put(key, b"first", "image/png")
    store.put(key, b"second", "image/png")  # a retried job overwrites
    assert store.exists(key) and store.get(key) == b"second"
    store.delete(key)
    store.delete(key)  # deleting twice is fine
    assert not store.exists(key)
    with pytest.raises(NotFoundError, match="g1"):
        store.get(key)


@pytest.mark.parametrize("key", ["../escape", "/abs/path", "a//b", "a/./b", "sp ace", ""])
def test_unsafe_keys_are_refused(store: BlobStore, key: str) -> None:
    with pytest.raises(InvalidRequestError):
        store.put(key, b"x")


def test_local_writes_are_atomic_and_leave_no_temporary_files(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    store.put("images/g/0.png", b"x" * 1000)
    assert [p.name for p in (tmp_path / "images" / "g").iterdir()] == ["0.png"]
    assert store.url("images/g/0.png") is None


def test_s3_presigned_url_serves_the_bytes(s3_endpoint: str) -> None:
    store = S3BlobStore("presign", endpoint_url=s3_endpoint, access_key_id="a", secret_access_key="b",
                        create_bucket=True)
    store.put("images/g/0.png", b"\x89PNG...", "image/png")
    url = store.url("images/g/0.png")
    assert url is not None
    response = httpx.get(url)
    assert response.status_code == 200 and response.content == b"\x89PNG..."
