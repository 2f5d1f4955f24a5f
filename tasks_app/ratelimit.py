"""Request-rate limits per organisation and per key, counted in Redis (fixed windows).

A limit is "<count>/<second|minute|hour|day>"; empty or 0 means unlimited. When Redis cannot be
reached requests are let through (the limit protects the service; it must not take it down).
"""
import logging
import time

import redis
from django.conf import settings

from .notify import get_redis

__all__ = ["parse_limit", "retry_after"]

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
