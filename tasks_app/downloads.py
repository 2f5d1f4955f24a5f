"""Signed, expiring download URLs for results of the server's own store (docs/DECISIONS.md 130-133).

A `local:///<path>` result URL names a file on the server's host: a client elsewhere cannot read
it; an `s3://` URL of the server's own store (RICLOUD_STORAGE_URL) needs that store's
credentials. Such results also carry `signed_url = {"url", "date_expires"}` pointing at
`GET /results/<id>/download?expires=<unix time>&signature=<sig>`, which serves the bytes to whoever
holds the URL until it expires: the signature is the credential, so no token is needed.

The signature is HMAC-SHA256 over `<result id>:<expires>` under a key derived from SECRET_KEY
(Django's `salted_hmac` with a salt of its own), base64url without padding; it is checked in
constant time against SECRET_KEY and each of SECRET_KEY_FALLBACKS, so rotating SECRET_KEY with the
old one as a fallback keeps issued URLs working until they expire.

The absolute base is RICLOUD_PUBLIC_URL, else the host of the request being answered (set by the
v3 views with `use_request`); a representation rendered outside a request (a webhook payload
written by a worker) without RICLOUD_PUBLIC_URL has `signed_url: null`.
"""
import base64
import functools
import hashlib
import hmac
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings

from . import determinism

__all__ = ["use_request", "download_signed_url", "signature", "verify", "local_path", "own_s3"]

SALT = "ricloud.results.download"
# Expiries are rounded up to the minute: renderings within a minute give the same URL.
ROUND_SECONDS = 60

_request = ContextVar("ricloud_download_request", default=None)


def use_request(request) -> None:
    """Name the request whose host absolute download URLs use (one ContextVar set, no work)."""
    _request.set(request)


@functools.lru_cache(maxsize=8)
def _key(secret: str) -> bytes:
    """Django's salted_hmac key derivation, done once per secret (a list renders many links)."""
    return hashlib.sha256((SALT + secret).encode()).digest()


def signature(result_id, expires: int, secret: str | None = None) -> str:
    """`salted_hmac(SALT, "<id>:<expires>", secret, algorithm="sha256")`, base64url."""
    digest = hmac.new(_key(secret or settings.SECRET_KEY), f"{result_id}:{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def verify(result_id, expires: int, given: str) -> bool:
    """True when `given` is the signature of (result id, expires) under SECRET_KEY or a fallback."""
    secrets = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return any(hmac.compare_digest(signature(result_id, expires, secret), given) for secret in secrets)


def _base() -> str | None:
    if settings.RICLOUD_PUBLIC_URL:
        return settings.RICLOUD_PUBLIC_URL.rstrip("/")
    request = _request.get()
    if request is None:
        return None
    base = getattr(request, "ricloud_download_base", None)
    if base is None:
        base = request.ricloud_download_base = f"{request.scheme}://{request.get_host()}"
    return base


@functools.lru_cache(maxsize=4)
def _date(expires: int) -> str:
    return datetime.fromtimestamp(expires, UTC).isoformat().replace("+00:00", "Z")


def own_s3(url: str) -> bool:
    """Whether an `s3://` result URL lies in the server's own store (RICLOUD_STORAGE_URL)."""
    own = settings.RICLOUD_STORAGE_URL
    return own.startswith("s3://") and url.startswith(own.rstrip("/") + "/")


def download_signed_url(obj, now: float | None = None) -> dict | None:
    """`{"url", "date_expires"}` for a result of the server's own store (local, or S3 when
    RICLOUD_STORAGE_URL is an `s3://` one, or kept in its row), or of a local storage config,
    while it can be read; else None."""
    if not (obj.url.startswith(("local:", "inline:")) or own_s3(obj.url)) or obj.state == "expired":
        return None
    base = _base()
    if base is None:
        return None
    now = time.time() if now is None else now
    expires = -(-int(now + settings.RICLOUD_DOWNLOAD_URL_EXPIRY_SECONDS) // ROUND_SECONDS) * ROUND_SECONDS
    if determinism.ON:
        expires = determinism.DOWNLOAD_EXPIRES  # reproducible responses (docs/DECISIONS.md 115)
    url = f"{base}/results/{obj.id}/download?expires={expires}&signature={signature(obj.id, expires)}"
    return {"url": url, "date_expires": _date(expires)}


def _local_roots() -> list[Path]:
    """Where local results may lie: the server's own store and the local storage config roots."""
    own = urlsplit(settings.RICLOUD_STORAGE_URL)
    roots = [own.netloc + own.path] if own.scheme == "local" else []
    return [Path(root).resolve() for root in [*roots, *settings.RICLOUD_LOCAL_STORAGE_ROOTS]]


def local_path(url: str) -> Path | None:
    """The file of a `local://` result URL when it lies under a local store root, else None."""
    parts = urlsplit(url)
    if parts.scheme != "local":
        return None
    path = Path(parts.path).resolve()
    return path if any(path.is_relative_to(root) for root in _local_roots()) else None
