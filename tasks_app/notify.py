"""Redis pub/sub wake-ups. Postgres holds the state; a lost notification only delays a waiter."""
import functools
import logging
from functools import partial

import redis
from django.conf import settings
from django.db import transaction

__all__ = ["get_redis", "notify", "notify_on_commit", "stream_channel"]

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=None)
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=10, health_check_interval=30)


def get_redis() -> redis.Redis:
    return _client(settings.REDIS_URL)


def stream_channel(stream: str) -> str:
    return f"ricloud:aschannel:{stream}"


def notify(channel: str, message: str = "1") -> None:
    try:
        get_redis().publish(channel, message)
    except redis.RedisError:
        logger.warning("could not publish to %s; waiters will catch up on their next wake-up", channel)


def notify_on_commit(channel: str, message: str = "1") -> None:
    transaction.on_commit(partial(notify, channel, message))
