"""Secrets at rest: credentials the server must use later are stored as Fernet tokens.

Fernet (AES-128-CBC with HMAC-SHA256, from `cryptography`) under the keys of
RICLOUD_ENCRYPTION_KEYS, as a MultiFernet: the first key encrypts, every key decrypts. A key is
rotated by putting a new one first, running `manage.py reencrypt` (every token re-encrypted under
the first key), then removing the old one.

Without that setting, the embedded default and DEBUG use a key generated once into
`var/encryption.key` (mode 0600), so a restart keeps reading what was stored. Anywhere else the
server refuses to start (`require_keys`, called by the WSGI/ASGI application, the Celery worker
and beat, and Django's system checks), since it could neither store nor read credentials.

A `SealedField` column holds tokens only: writing anything else to it raises, so a credential
cannot reach the database in clear by mistake. Reading is explicit (`unseal`), where it is used.
"""
import functools
import json
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import models

__all__ = [
    "SealedField",
    "UnreadableSecret",
    "seal",
    "unseal",
    "reseal",
    "is_token",
    "require_keys",
    "sealed_fields",
]

GENERATE = 'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
MISSING = (
    "RICLOUD_ENCRYPTION_KEYS is not set. Credentials (session passwords, v2 log-in passwords and 2FA "
    "codes, webhook secrets, storage credentials) are stored encrypted with it, so the server does not "
    "start without it outside the embedded default (no DATABASE_URL) and DJANGO_DEBUG=1. Set it to a "
    f"Fernet key, e.g. the output of: {GENERATE}"
)
MALFORMED = (
    "RICLOUD_ENCRYPTION_KEYS must be comma-separated Fernet keys (32 url-safe base64-encoded bytes "
    f"each), e.g. the output of: {GENERATE}"
)


class UnreadableSecret(Exception):
    """A token none of the configured keys opens (a key was removed before `reencrypt` ran)."""


@functools.lru_cache(maxsize=4)
def _key_file(path: Path) -> str:
    """The key in `path`, generated there (0600) by the first process that needs it. Web, worker
    and beat may start together: the file appears whole or not at all (written aside, then
    linked), and the first link wins."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        spare = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(spare, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(Fernet.generate_key().decode("ascii") + "\n")
        try:
            os.link(spare, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(spare)
    key = path.read_text().strip()
    if not key:
        raise ImproperlyConfigured(f"{path} is empty; remove it to generate a new key, or set RICLOUD_ENCRYPTION_KEYS.")
    return key


def _keys() -> tuple[str, ...]:
    keys = tuple(settings.RICLOUD_ENCRYPTION_KEYS)
    if keys:
        return keys
    if settings.RICLOUD_ENCRYPTION_KEY_FILE:
        return (_key_file(Path(settings.RICLOUD_ENCRYPTION_KEY_FILE)),)
    raise ImproperlyConfigured(MISSING)


@functools.lru_cache(maxsize=8)
def _multifernet(keys: tuple[str, ...]) -> MultiFernet:
    try:
        return MultiFernet([Fernet(key) for key in keys])
    except (ValueError, TypeError):
        raise ImproperlyConfigured(MALFORMED) from None


def _fernet() -> MultiFernet:
    return _multifernet(_keys())


def require_keys() -> None:
    """Raise ImproperlyConfigured unless credentials can be sealed and opened (process start)."""
    _fernet()


@checks.register(checks.Tags.security)
def check_encryption_keys(app_configs=None, **kwargs) -> list:
    try:
        require_keys()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="ricloud.E001")]
    return []


def seal(value) -> str:
    """A Fernet token of `value` (anything JSON can hold), under the first key."""
    return _fernet().encrypt(json.dumps(value, separators=(",", ":")).encode("utf-8")).decode("ascii")


def unseal(token: str | None):
    """The value sealed in `token` (None for None). Raises UnreadableSecret, which names no value."""
    if token is None:
        return None
    try:
        return json.loads(_fernet().decrypt(token.encode("ascii")))
    except (InvalidToken, UnicodeEncodeError):
        raise UnreadableSecret(
            "A stored credential cannot be decrypted with any key of RICLOUD_ENCRYPTION_KEYS "
            "(was a key removed before `manage.py reencrypt` ran?)."
        ) from None


def reseal(token: str) -> str:
    """The same value, encrypted again under the first key."""
    try:
        return _fernet().rotate(token.encode("ascii")).decode("ascii")
    except InvalidToken:
        raise UnreadableSecret("A stored credential cannot be decrypted with any key of RICLOUD_ENCRYPTION_KEYS.") from None


def is_token(value) -> bool:
    """Whether `value` has the shape of a Fernet token: base64url of version 0x80, a 64-bit
    timestamp (its top bytes zero for centuries), IV, ciphertext and HMAC (at least 100 chars)."""
    return isinstance(value, str) and value.startswith("gAAAAA") and len(value) >= 100


class SealedField(models.TextField):
    """A Fernet token made by `seal()`. Anything else is refused rather than stored in clear."""

    description = "A sealed (Fernet-encrypted) JSON value"

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if value is not None and not is_token(value):
            # The message names the column, never the value.
            raise ValueError(f"{self.model.__name__}.{self.name} stores sealed values only: write seal(value).")
        return value


def sealed_fields():
    """(model, field) of every SealedField of the installed models."""
    from django.apps import apps

    return [
        (model, field)
        for model in apps.get_models()
        for field in model._meta.concrete_fields
        if isinstance(field, SealedField)
    ]
