"""`Ricloud-Await`: hold a response until the triggered work settles, woken by Redis pub/sub.

The check reads Postgres; notifications only say "look again", so a lost one costs at most the
rest of the wait, never a wrong answer.
"""
import time

import redis
from django.conf import settings

from ..notify import get_redis

__all__ = ["await_seconds", "wait_until", "task_channel", "poll_channel", "session_channel", "subscription_channel"]


def task_channel(task_id) -> str:
    return f"ricloud:task:{task_id}"


def poll_channel(poll_id) -> str:
    return f"ricloud:poll:{poll_id}"


def session_channel(session_id) -> str:
    return f"ricloud:session:{session_id}"


def subscription_channel(subscription_id) -> str:
    return f"ricloud:subscription:{subscription_id}"


def await_seconds(header: str | None) -> float:
    """The requested wait, capped; `0`, negative or garbage (the official client sends `0`) is none."""
    try:
        seconds = float(header or 0)
    except ValueError:
        return 0.0
    if not seconds > 0:  # also rejects NaN
        return 0.0
    return min(seconds, settings.RICLOUD_AWAIT_MAX_SECONDS)


def wait_until(channels: list[str], settled, timeout: float) -> bool:
    """Return as soon as `settled()` is true (checked on every notification), or after `timeout`."""
    if timeout <= 0:
        return False
    deadline = time.monotonic() + timeout
    try:
        pubsub = get_redis().pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(*channels)
        # Read the confirmations: once they are in, no notification can be missed, and the loop
        # below re-checks only when a notification (not a confirmation) arrives.
        for _ in channels:
            pubsub.parse_response(block=True, timeout=min(timeout, 1.0))
    except redis.RedisError:
        return settled()
    try:
        if settled():  # checked after subscribing: no change can slip between
            return True
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if pubsub.get_message(timeout=remaining) is not None and settled():
                return True
    except redis.RedisError:
        return settled()
    finally:
        pubsub.close()
