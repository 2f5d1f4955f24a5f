"""Result storage backends. `local://` writes under a directory and hands out `local:///<path>`
URLs that ricloud-py's `ricloud.storage.download_result` copies directly."""
import hashlib
import os
import tempfile
from pathlib import Path
from urllib.parse import quote, urlsplit

from django.conf import settings

from tasks_app.sealing import unseal

__all__ = ["LocalStorage", "S3Storage", "StoredObject", "get_storage", "open_storage", "object_name", "result_storage"]


class StoredObject:
    def __init__(self, url: str, checksum: str, size: int):
        self.url, self.checksum, self.size = url, checksum, size


class LocalStorage:
    """Files under `root`; writes are atomic (temp file + rename), so a rerun overwrites cleanly."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()

    @classmethod
    def from_url(cls, url: str) -> "LocalStorage":
        parts = urlsplit(url)
        path = (parts.netloc + parts.path) if parts.netloc else parts.path
        return cls(path)

    def put(self, name: str, content: bytes) -> StoredObject:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return StoredObject(f"local://{path}", hashlib.md5(content).hexdigest(), len(content))

    def path_of(self, url: str) -> Path:
        return Path(urlsplit(url).path)

    def get(self, url: str) -> bytes:
        return self.path_of(url).read_bytes()

    def delete(self, url: str) -> None:
        self.path_of(url).unlink(missing_ok=True)


def object_name(*, organisation_id, poll_id, task_id, identifier: str) -> str:
    """A unique object path: organisation / poll (or `tasks`) / task / identifier."""
    return f"{organisation_id}/{poll_id or 'tasks'}/{task_id}/{quote(identifier, safe='')}"


class S3Storage:
    """Objects in an S3 bucket (or an S3-compatible service) through boto3."""

    def __init__(self, url: str, credentials: dict | None = None):
        parts = urlsplit(url)
        self.bucket, self.prefix = parts.netloc, parts.path.strip("/")
        credentials = credentials or {}

        def pick(*names):
            return next((credentials[n] for n in names if credentials.get(n)), None)

        import boto3
        from botocore.config import Config

        self.client = boto3.client(
            "s3",
            aws_access_key_id=pick("access_key_id", "aws_access_key_id"),
            aws_secret_access_key=pick("secret_access_key", "aws_secret_access_key"),
            region_name=pick("region", "region_name") or "us-east-1",
            endpoint_url=pick("endpoint_url") or settings.RICLOUD_S3_ENDPOINT_URL or None,
            config=Config(connect_timeout=10, read_timeout=60, retries={"max_attempts": 3}),
        )

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def _split(self, url: str) -> tuple[str, str]:
        parts = urlsplit(url)
        return parts.netloc, parts.path.lstrip("/")

    def put(self, name: str, content: bytes) -> StoredObject:
        key = self._key(name)
        self.client.put_object(Bucket=self.bucket, Key=key, Body=content)
        return StoredObject(f"s3://{self.bucket}/{key}", hashlib.md5(content).hexdigest(), len(content))

    def get(self, url: str) -> bytes:
        bucket, key = self._split(url)
        return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def delete(self, url: str) -> None:
        bucket, key = self._split(url)
        self.client.delete_object(Bucket=bucket, Key=key)

    def signed_url(self, url: str, expires_in: int) -> str:
        bucket, key = self._split(url)
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires_in
        )


def open_storage(url: str, credentials: dict | None = None):
    """The backend for a storage URL (`local://…` or `s3://bucket/prefix`); a stored object's
    own URL opens a backend that can read or delete it."""
    scheme = urlsplit(url).scheme
    if scheme == "local":
        return LocalStorage.from_url(url)
    if scheme == "s3":
        return S3Storage(url, credentials)
    raise ValueError(f"Unsupported storage URL scheme {scheme!r}; expected local:// or s3://")


def get_storage(config=None):
    """The storage of a StorageConfig, or the server's own (RICLOUD_STORAGE_URL) for None."""
    if config is None:
        return open_storage(settings.RICLOUD_STORAGE_URL)
    return open_storage(config.url, unseal(config.credentials))


def result_storage(result):
    """A backend that can read or delete a published result."""
    config = result.storage_config if result.storage_config_id else None
    return open_storage(result.url, unseal(config.credentials) if config else None)
