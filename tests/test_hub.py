"""The web process's Redis hub (ricloud_server/hub.py), against the real Redis: what it hears and
when a hold may skip its first check (`quiet_since`)."""
import asyncio
import os
import time

import redis

from ricloud_server.hub import Hub

URL = os.environ.get("REDIS_URL") or os.environ.get("CELERY_BROKER_URL") or "redis://127.0.0.1:6379/15"


async def _started(hub: Hub) -> None:
    hub.start()
    for _ in range(200):
        if hub.up:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the hub did not subscribe")


async def _heard(hub: Hub, channel: str, since: float) -> None:
    for _ in range(200):
        if not hub.quiet_since([channel], since):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the hub did not hear {channel}")


def test_quiet_since_is_false_before_the_subscription_and_after_a_notice():
    async def scenario():
        hub = Hub(URL)
        before = time.monotonic()
        assert not hub.quiet_since(["ricloud:poll:x"], before)  # not subscribed: unknown
        await _started(hub)
        assert not hub.quiet_since(["ricloud:poll:x"], before)  # subscribed after `before`: unknown
        since = time.monotonic()
        channel = f"ricloud:poll:test-{os.getpid()}-{since}"
        assert hub.quiet_since([channel, "ricloud:poll:other"], since)
        redis.Redis.from_url(URL).publish(channel, "1")
        await _heard(hub, channel, since)
        assert not hub.quiet_since(["ricloud:poll:other", channel], since)  # any of the channels
        assert hub.quiet_since([channel], time.monotonic())  # nothing heard after a later moment
        await hub.stop()
        assert not hub.quiet_since([channel], time.monotonic())  # down: unknown again

    asyncio.run(scenario())


def test_a_watch_registered_after_a_notice_still_learns_of_it():
    """The order a hold relies on: a notice published between the view's `since` and the watch is
    remembered, so the hold checks at once instead of waiting for a wake-up that already came."""
    async def scenario():
        hub = Hub(URL)
        await _started(hub)
        since = time.monotonic()
        channel = f"ricloud:poll:late-{os.getpid()}-{since}"
        redis.Redis.from_url(URL).publish(channel, "1")
        await _heard(hub, channel, since)
        event = asyncio.Event()
        hub.watch([channel], event)
        assert not hub.quiet_since([channel], since)  # → the hold checks at once
        redis.Redis.from_url(URL).publish(channel, "1")
        await asyncio.wait_for(event.wait(), 2)  # and later notices still wake it
        hub.unwatch([channel], event)
        await hub.stop()

    asyncio.run(scenario())


def test_old_moments_are_not_vouched_for(monkeypatch):
    """Past the hub's memory (HEARD_SECONDS) it cannot say that nothing came: check."""
    import ricloud_server.hub as hub_module

    async def scenario():
        monkeypatch.setattr(hub_module, "HEARD_SECONDS", 0.0)
        hub = Hub(URL)
        await _started(hub)
        since = time.monotonic()
        await asyncio.sleep(0.01)
        assert not hub.quiet_since(["ricloud:poll:y"], since)
        await hub.stop()

    asyncio.run(scenario())


def test_a_message_beyond_a_wake_up_is_kept_while_its_channel_is_watched():
    """A completed poll sent by its worker (transitions.py `_completion_notice`) is what a hold on
    its channel is handed; plain wake-ups are not kept, nor is anything on a channel nobody
    watches, and a channel's message goes with its last watcher."""
    async def scenario():
        hub = Hub(URL)
        await _started(hub)
        since = time.monotonic()
        watched, unwatched = (f"ricloud:poll:kept-{os.getpid()}-{since}-{n}" for n in (1, 2))
        event = asyncio.Event()
        hub.watch([watched], event)
        client = redis.Redis.from_url(URL)
        client.publish(watched, "1")
        await asyncio.wait_for(event.wait(), 2)
        assert hub.message([watched]) is None  # a plain wake-up
        event.clear()
        client.publish(unwatched, "[1]")
        client.publish(watched, '["done"]')
        await asyncio.wait_for(event.wait(), 2)
        assert hub.message([unwatched]) is None
        assert hub.message([unwatched, watched]) == b'["done"]'
        hub.unwatch([watched], event)
        assert hub.message([watched]) is None
        await hub.stop()

    asyncio.run(scenario())
