"""Image bytes: a local directory (embedded mode) or an S3-compatible bucket (scaled mode), behind one interface.

Keys are relative, '/'-separated paths such as ``images/<generation id>/0.png`` (see :func:`image_blob_key`): the
same generation and index always give the same key, so a re-run job overwrites rather than duplicates its image.
Beside each generated image the worker stores its JPEG copy (:func:`jpeg_copy_key`), which the image datasets
copy instead of re-encoding the PNG.
"""

from __future__ import annotations

import abc
import contextlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imageloop.errors import ConfigError, InvalidRequestError, NotFoundError, StorageError
from imageloop.files import atomic_write_bytes

if TYPE_CHECKING:
    from imageloop.config import Settings

_KEY_PATTERN = re.compile(r"^[A-Za-z0-9_.=-]+(/[A-Za-z0-9_.=-]+)*$")
MAX_KEY_LENGTH = 512


def image_blob_key(generation_id: str, index: int, extension: str = "png") -> str:
    """The blob key of image ``index`` of a generation (deterministic, so retries overwrite)."""
    return f"images/{generation_id}/{index}.{extension}"


def jpeg_copy_key(image_key: str) -> str:
    """The blob key of the JPEG copy of the image under ``image_key`` (``images/g/0.png`` -> ``images/g/0.jpg``)."""
    return image_key.removesuffix(".png") + ".jpg"


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative key; InvalidRequestError otherwise (no '..', no absolute paths)."""
    parts = key.split("/")
    if len(key) > MAX_KEY_LENGTH or not _KEY_PATTERN.match(key) or any(part in {".", ".."} for part in parts):
        raise InvalidRequestError(
            "key", f"invalid blob key {key!r}", value=key, allowed="relative '/'-separated path of [A-Za-z0-9_.=-]"
        )
    return key


class BlobStore(abc.ABC):
    """Stores bytes under keys. Implementations raise NotFoundError for a missing key, StorageError on failure."""

    @abc.abstractmethod
    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Store ``data`` under ``key``, replacing what was there; readers never see a partial write."""

    @abc.abstractmethod
    def get(self, key: str) -> bytes:
        """The bytes stored under ``key``."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; deleting a missing key is not an error."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        """Whether ``key`` holds bytes."""

    def url(self, key: str, expires_in: int = 3600) -> str | None:
        """A URL a client can fetch the bytes from directly, or None when the store has no such URL."""
        return None


class LocalBlobStore(BlobStore):
    """Blobs as files under ``root``; writes go to a temporary file that is renamed into place (atomic)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        # Image bytes are private: files are written 0600 (atomic_write's temporary files), the root folder 0700.
        with contextlib.suppress(OSError):  # a read-only place: put() names the problem when it is used
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        path = self._path(key)
        try:
            atomic_write_bytes(path, data)
        except OSError as exc:
            raise StorageError(f"cannot write blob {key!r} under {self.root}: {exc}") from exc

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise NotFoundError(f"blob {key!r} not found") from exc
        except OSError as exc:
            raise StorageError(f"cannot read blob {key!r}: {exc}") from exc

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot delete blob {key!r}: {exc}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()


class S3BlobStore(BlobStore):
    """Blobs in an S3-compatible bucket (AWS, MinIO, moto...). A PUT is atomic in S3, so no temporary object."""

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        prefix: str = "",
        create_bucket: bool = False,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix
        self._client: Any = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}),
        )
        if create_bucket:
            self._ensure_bucket()

    def _ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError:
            try:
                self._client.create_bucket(Bucket=self.bucket)
            except ClientError as exc:
                raise StorageError(f"cannot create bucket {self.bucket!r}: {exc}") from exc

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=content_type)
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"cannot write blob {key!r} to bucket {self.bucket!r}: {exc}") from exc

    def get(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            return bytes(response["Body"].read())
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                raise NotFoundError(f"blob {key!r} not found") from exc
            raise StorageError(f"cannot read blob {key!r} from bucket {self.bucket!r}: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"cannot read blob {key!r} from bucket {self.bucket!r}: {exc}") from exc

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"cannot delete blob {key!r} from bucket {self.bucket!r}: {exc}") from exc

    def exists(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404", "NotFound"}:
                return False
            raise StorageError(f"cannot check blob {key!r} in bucket {self.bucket!r}: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"cannot check blob {key!r} in bucket {self.bucket!r}: {exc}") from exc
        return True

    def url(self, key: str, expires_in: int = 3600) -> str | None:
        """A presigned GET URL valid for ``expires_in`` seconds."""
        url = self._client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)}, ExpiresIn=expires_in
        )
        return str(url)


def blob_store_from_settings(settings: Settings, *, create_bucket: bool = False) -> BlobStore:
    """The blob store ``settings.blob_store`` selects: files under ``settings.blobs_dir``, or the S3 bucket."""
    if settings.blob_store == "local":
        return LocalBlobStore(settings.blobs_dir)
    if settings.blob_store == "s3":
        s3 = settings.s3
        secret = s3.secret_access_key.get_secret_value() if s3.secret_access_key is not None else None
        return S3BlobStore(
            s3.bucket, endpoint_url=s3.endpoint_url, region=s3.region, access_key_id=s3.access_key_id,
            secret_access_key=secret, prefix=s3.prefix, create_bucket=create_bucket,
        )
    raise ConfigError(f"blob_store: unknown store {settings.blob_store!r} (allowed: local, s3)")
