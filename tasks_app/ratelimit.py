"""Request-rate limits per organisation and per key, and of failed authentication per client
address, counted in Redis (fixed windows).

A limit is "<count>/<second|minute|hour|day>"; empty or 0 means unlimited. When Redis cannot be
reached requests are let through (the limit protects the service; it must not take it down).

The client address is REMOTE_ADDR; `X-Forwarded-For` is read only when REMOTE_ADDR is one of
RICLOUD_TRUSTED_PROXIES, and then from the right, skipping the trusted proxies (anything left of
the first untrusted hop can be written by the client). IPv6 clients are counted per /64, the
block one host usually holds.
"""
import functools
import ipaddress
import logging
import time

import redis
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from . import authcache
from .notify import get_redis

__all__ = ["parse_limit", "retry_after", "client_address", "failed_auth_wait", "count_failed_auth"]

logger = logging.getLogger(__name__)

PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def parse_limit(value: str) -> tuple[int, int] | None:
    if not value:
        return None
    count, _, period = value.partition("/")
    count = int(count)
    return (count, PERIODS[period.strip().rstrip("s") or "hour"]) if count > 0 else None


def retry_after(key) -> int | None:
    """Count this request; the seconds to wait if it breaks a limit, else None."""
    limits = [
        (f"org:{key.organisation_id}", parse_limit(settings.RICLOUD_RATE_LIMIT_ORGANISATION)),
        (f"key:{key.id}", parse_limit(settings.RICLOUD_RATE_LIMIT_KEY)),
    ]
    limits = [(name, limit) for name, limit in limits if limit]
    if not limits:
        return None
    now = time.time()
    counters = [(f"ricloud:rate:{name}:{period}:{int(now // period)}", count, period) for name, (count, period) in limits]
    try:
        client = get_redis()
        pipe = client.pipeline(transaction=False)
        for counter, _, period in counters:
            pipe.incr(counter)
            pipe.expire(counter, period + 1)
        used = pipe.execute()[::2]
        waits = [period - int(now % period) for (_, count, period), n in zip(counters, used, strict=True) if n > count]
        if waits:
            # Only admitted requests count: give back what this refused one took, so that one key's
            # refused requests never use up its organisation's (or another key's) budget.
            pipe = client.pipeline(transaction=False)
            for counter, _, _ in counters:
                pipe.decr(counter)
            pipe.execute()
    except redis.RedisError:
        logger.warning("rate limiting skipped: Redis unavailable")
        return None
    return max(waits) if waits else None


@functools.lru_cache(maxsize=8)
def _networks(value: str) -> tuple:
    try:
        return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in value.split(",") if part.strip())
    except ValueError as exc:
        raise ImproperlyConfigured(f"RICLOUD_TRUSTED_PROXIES: {exc}") from None


def _ip(value: str):
    try:
        return ipaddress.ip_address(value.strip().strip("[]"))
    except ValueError:
        return None


def client_address(meta) -> str:
    """The address a request came from (see the module docstring), "" if unknown."""
    address = _ip(meta.get("REMOTE_ADDR") or "")
    if address is None:
        return ""
    trusted = _networks(settings.RICLOUD_TRUSTED_PROXIES)
    if trusted and any(address in network for network in trusted):
        for hop in reversed((meta.get("HTTP_X_FORWARDED_FOR") or "").split(",")):
            hop = _ip(hop)
            if hop is None:
                break  # garbage: keep the last address a trusted proxy vouched for
            address = hop
            if not any(hop in network for network in trusted):
                break
    if address.version == 6:
        if address.ipv4_mapped:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


FAILED_AUTH_PREFIX = "ricloud:rate:authfail:"


def failed_auth_window(name) -> tuple[str, float] | None:
    """(address, end of the window in epoch seconds) of a failed-authentication counter's key."""
    name = name.decode() if isinstance(name, bytes) else str(name)
    if not name.startswith(FAILED_AUTH_PREFIX):
        return None
    try:
        address, period, window = name[len(FAILED_AUTH_PREFIX):].rsplit(":", 2)  # IPv6 addresses have colons
        return address, (int(window) + 1) * int(period)
    except ValueError:
        return None


def _failed_auth_counter(address: str):
    """(counter key, limit, period) of the address's current window, or None when not limited."""
    limit = parse_limit(settings.RICLOUD_RATE_LIMIT_FAILED_AUTH)
    if limit is None or not address:
        return None
    count, period = limit
    now = time.time()
    return f"{FAILED_AUTH_PREFIX}{address}:{period}:{int(now // period)}", count, period, period - int(now % period)


def failed_auth_wait(address: str, read=None) -> int | None:
    """The seconds an address must wait because it failed authentication too often, else None.
    Checked before a token is looked up: a blocked address has nothing checked at all. `read(name)`
    reads the counter (default: a Redis GET; authentication reads it with the cache generation)."""
    counter = _failed_auth_counter(address)
    if counter is None or not authcache.heard.may_be_limited(address):
        if read is not None:
            read(None)
        return None
    name, count, _, wait = counter
    try:
        used = read(name) if read is not None else get_redis().get(name)
    except redis.RedisError:
        return None
    return wait if used is not None and int(used) >= count else None


def count_failed_auth(address: str) -> int | None:
    """Count one failed authentication; the seconds to wait if the address is now over its limit."""
    counter = _failed_auth_counter(address)
    if counter is None:
        return None
    name, count, period, wait = counter
    try:
        pipe = get_redis().pipeline(transaction=False)
        pipe.incr(name)
        pipe.expire(name, period + 1)
        pipe.publish(authcache.FAILED_AUTH_CHANNEL, name)  # every web process checks this address now
        used = pipe.execute()[0]
    except redis.RedisError:
        logger.warning("failed-authentication limit skipped: Redis unavailable")
        return None
    if used > count:
        return wait
    return None
