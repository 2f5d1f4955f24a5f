"""Result storage backends. `local://` writes under a directory and hands out `local:///<path>`
URLs that ricloud-py's `ricloud.storage.download_result` copies directly."""
import functools
import hashlib
import os
import tempfile
from pathlib import Path
from urllib.parse import quote, urlsplit

from django.conf import settings

from tasks_app.sealing import unseal

__all__ = ["LocalStorage", "S3Storage", "StoredObject", "get_storage", "open_storage", "object_name", "result_storage",
           "inline_url", "INLINE_SCHEME"]

INLINE_SCHEME = "inline"


class StoredObject:
    def __init__(self, url: str, checksum: str, size: int):
        self.url, self.checksum, self.size = url, checksum, size


def _stored(path: Path, content: bytes) -> StoredObject:
    return StoredObject(f"local://{path}", hashlib.md5(content).hexdigest(), len(content))


class LocalStorage:
    """Files under `root`; writes are atomic (temp file + rename), so a rerun overwrites cleanly."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()

    @classmethod
    def from_url(cls, url: str) -> "LocalStorage":
        parts = urlsplit(url)
        path = (parts.netloc + parts.path) if parts.netloc else parts.path
        return cls(path)

    @staticmethod
    def name_for(*, organisation_id, poll_id, task_id, identifier: str) -> str:
        """On a local disk a task's results are files `<task id>.<identifier>` in one directory per
        organisation and ~4.7 hours of task ids (a UUIDv7's first 6 hex digits are the top of its
        timestamp), not a directory per task: a mkdir cost ~0.4 ms of kernel time on ext4, as much
        as the rest of a no-op task's storage. Ids, not the clock, name the directory, so the
        deterministic mode's paths stay reproducible."""
        filename = f"{task_id}.{quote(identifier, safe='')}"
        if len(filename.encode()) > 255:  # NAME_MAX
            filename = f"{task_id}.{hashlib.sha256(identifier.encode()).hexdigest()}"
        return f"{organisation_id}/{str(task_id)[:6]}/{filename}"

    def put(self, name: str, content: bytes) -> StoredObject:
        """Written in place when the file is new (a task's result on its first run: nobody reads it
        before the task's ending commits, and a rerun replaces it), else replaced atomically."""
        path = self.root / name
        for _ in range(2):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileNotFoundError:  # the first of its directory
                path.parent.mkdir(parents=True, exist_ok=True)
                continue
            except FileExistsError:
                break
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
            return _stored(path, content)
        return self._replace(path, content)

    def _replace(self, path: Path, content: bytes) -> StoredObject:
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
        return _stored(path, content)

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

    name_for = staticmethod(object_name)

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


def inline_url(task_id, identifier: str) -> str:
    """The URL of a result kept in its own row (Result.content)."""
    return f"{INLINE_SCHEME}:{task_id}/{quote(identifier, safe='')}"


class InlineResult:
    """Reads a result kept in its row; there is nothing to delete but the row's bytes, which the
    result's expiry clears."""

    def __init__(self, result=None):
        self.result = result

    def get(self, url: str) -> bytes:
        content = getattr(self.result, "content", None)
        if content is None:
            raise FileNotFoundError(f"{url}: the result's content is no longer stored")
        return bytes(content)

    def delete(self, url: str) -> None:
        return None


@functools.lru_cache(maxsize=256)
def _local(url: str) -> "LocalStorage":
    return LocalStorage.from_url(url)  # resolves its root: once per URL, not per result


def open_storage(url: str, credentials: dict | None = None):
    """The backend for a storage URL (`local://…` or `s3://bucket/prefix`); a stored object's
    own URL opens a backend that can read or delete it."""
    scheme = urlsplit(url).scheme
    if scheme == "local":
        return _local(url)
    if scheme == INLINE_SCHEME:
        return InlineResult()  # deletes nothing; reads need the row (result_storage)
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
    if result.url.startswith(INLINE_SCHEME + ":"):
        return InlineResult(result)
    config = result.storage_config if result.storage_config_id else None
    return open_storage(result.url, unseal(config.credentials) if config else None)
