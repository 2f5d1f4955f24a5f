"""Result storage backends. `local://` writes under a directory and hands out `local:///<path>`
URLs that ricloud-py's `ricloud.storage.download_result` copies directly."""
import hashlib
import os
import tempfile
from pathlib import Path
from urllib.parse import quote, urlsplit

from django.conf import settings

__all__ = ["LocalStorage", "StoredObject", "get_storage", "object_name"]


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


def get_storage() -> LocalStorage:
    url = settings.RICLOUD_STORAGE_URL
    scheme = urlsplit(url).scheme
    if scheme != "local":
        raise ValueError(f"Unsupported RICLOUD_STORAGE_URL scheme {scheme!r}; expected local://")
    return LocalStorage.from_url(url)
