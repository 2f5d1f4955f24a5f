"""Per-process cache of what authentication and scope checks read, invalidated on change.

A key (with its organisation) and an organisation's permission rows are read from Postgres once
and kept in process memory, tagged with a *generation* number kept in Redis. Every change to a
key, an organisation or permissions bumps the generation (at once and again on commit); every
request reads it and refetches what was cached under an older one. Entries also expire after
CACHE_SECONDS. Without Redis nothing is cached. The cache holds field values only: each request
gets fresh model instances it may change freely.

Reading the generation costs a Redis round trip per request, except in a web process whose
subscription hub is up (ricloud_server/hub.py): each bump is published with its new value, and
the hub keeps what it heard in `heard` (with the addresses whose failed authentications are
counted, ratelimit.py), loaded from Redis whenever its subscription (re)starts. Until then, and as
soon as it is lost, requests ask Redis as before.
"""
import logging
import threading
import time

import redis
from django.db import transaction

from .notify import get_redis

__all__ = ["generation", "generation_and", "cached", "bump", "heard", "Heard", "CACHE_SECONDS", "GENERATION_CHANNEL",
           "FAILED_AUTH_CHANNEL"]

logger = logging.getLogger(__name__)

GENERATION_KEY = "ricloud:auth:generation"
# Published by every bump (its new value) and every counted failed authentication (its counter's
# key): every hub subscribes to both for as long as it is up (ricloud_server/hub.py).
GENERATION_CHANNEL = "ricloud:auth-generation"
FAILED_AUTH_CHANNEL = "ricloud:auth-failed"
CACHE_SECONDS = 60.0
_entries: dict = {}
_lock = threading.Lock()


class Heard:
    """What this process's hub heard: the generation, and the addresses with failed
    authentications counted in a window not yet over (address → the window's end, epoch seconds).
    `known` only while the hub's subscription is up and has read both from Redis since it started."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.known, self.generation, self.failing = False, 0, {}

    def load(self, generation: int, failing: dict) -> None:
        self.generation, self.failing, self.known = max(self.generation, generation), dict(failing), True

    def bumped(self, generation: int) -> None:
        self.generation = max(self.generation, generation)  # published out of order: never go back

    def failed(self, address: str, until: float) -> None:
        self.failing[address] = max(self.failing.get(address, 0.0), until)
        if len(self.failing) > 10_000:  # forget the windows that are over
            now = time.time()
            self.failing = {name: end for name, end in self.failing.items() if end > now}

    def may_be_limited(self, address: str) -> bool:
        """Whether the address may have failures counted in the current window (True unless known)."""
        return not self.known or self.failing.get(address, 0.0) > time.time()


heard = Heard()


class HubListener:
    """`heard`, kept by a web process's hub (ricloud_server/hub.py): loaded from Redis each time its
    subscription starts, updated by what it hears on the two channels, reset when it is lost."""

    channels = (GENERATION_CHANNEL, FAILED_AUTH_CHANNEL)

    async def subscribed(self, client) -> None:
        """Read the generation and the failed-authentication counters of the current windows.
        Anything published meanwhile is queued on the subscription and heard after this."""
        from .ratelimit import FAILED_AUTH_PREFIX, failed_auth_window

        generation = int(await client.get(GENERATION_KEY) or 0)
        failing = {}
        async for name in client.scan_iter(match=FAILED_AUTH_PREFIX + "*", count=1000):
            window = failed_auth_window(name)
            if window is not None:
                failing[window[0]] = max(failing.get(window[0], 0.0), window[1])
        heard.load(generation, failing)

    def on_message(self, channel: str, data) -> None:
        from .ratelimit import failed_auth_window

        if channel == GENERATION_CHANNEL:
            try:
                heard.bumped(int(data))
            except (TypeError, ValueError):
                heard.reset()  # not ours to read: ask Redis until the next subscription
            return
        window = failed_auth_window(data)
        if window is not None:
            heard.failed(*window)

    def lost(self) -> None:
        heard.reset()


def generation():
    """The current generation, or None when Redis cannot be read (then nothing is cached)."""
    if heard.known:
        return str(heard.generation).encode()
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
        client = get_redis()
        client.publish(GENERATION_CHANNEL, client.incr(GENERATION_KEY))
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
