"""Per-process cache of what authentication and scope checks read, invalidated on change.

A key (with its organisation) and an organisation's permission rows are read from Postgres once
and kept in process memory, tagged with a *generation* number kept in Redis. Every change to a
key, an organisation or permissions bumps the generation (at once and again on commit); every
request reads it (one Redis GET) and refetches what was cached under an older one. Entries also
expire after CACHE_SECONDS. Without Redis nothing is cached. The cache holds field values only:
each request gets fresh model instances it may change freely.
"""
import logging
import threading
import time

import redis
from django.db import transaction

from .notify import get_redis

__all__ = ["generation", "generation_and", "cached", "bump", "CACHE_SECONDS"]

logger = logging.getLogger(__name__)

GENERATION_KEY = "ricloud:auth:generation"
CACHE_SECONDS = 60.0
_entries: dict = {}
_lock = threading.Lock()


def generation():
    """The current generation, or None when Redis cannot be read (then nothing is cached)."""
    try:
        return get_redis().get(GENERATION_KEY) or b"0"
    except redis.RedisError:
        return None


def generation_and(name: str | None):
    """The generation and the value of another Redis key `name` in one round trip: (None, None)
    when Redis cannot be read."""
    if name is None:
        return generation(), None
    try:
        current, value = get_redis().mget(GENERATION_KEY, name)
    except redis.RedisError:
        return None, None
    return current or b"0", value


def cached(name, current, load):
    """The value cached under `name` for generation `current`, else `load()` (cached if it can)."""
    if current is None:
        return load()
    entry = _entries.get(name)
    if entry is not None and entry[0] == current and entry[1] > time.monotonic():
        return entry[2]
    value = load()
    with _lock:
        if len(_entries) > 10_000:
            _entries.clear()
        _entries[name] = (current, time.monotonic() + CACHE_SECONDS, value)
    return value


def _incr() -> None:
    try:
        get_redis().incr(GENERATION_KEY)
    except redis.RedisError:
        logger.warning("could not bump the auth cache generation; caches expire within %ss", CACHE_SECONDS)


def bump(**_) -> None:
    """Forget every cached entry here, and tell every process (now, and once committed)."""
    with _lock:
        _entries.clear()
    _incr()
    transaction.on_commit(_incr)


def connect_signals() -> None:
    from django.db.models.signals import post_delete, post_save

    from .models import Key, Organisation, Permissions

    for model in (Key, Organisation, Permissions):
        post_save.connect(bump, sender=model, dispatch_uid=f"authcache-save-{model.__name__}")
        post_delete.connect(bump, sender=model, dispatch_uid=f"authcache-delete-{model.__name__}")
