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
    try:
        pipe = get_redis().pipeline(transaction=False)
        for name, (_, period) in limits:
            window = int(now // period)
            counter = f"ricloud:rate:{name}:{period}:{window}"
            pipe.incr(counter)
            pipe.expire(counter, period + 1)
        counts = pipe.execute()[::2]
    except redis.RedisError:
        logger.warning("rate limiting skipped: Redis unavailable")
        return None
    waits = [period - int(now % period) for (name, (count, period)), used in zip(limits, counts, strict=True) if used > count]
    return max(waits) if waits else None
