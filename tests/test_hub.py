"""The web process's Redis hub (ricloud_server/hub.py), against the real Redis: which channels it
subscribes to, what it hears, and when a hold may skip its first check (`quiet_since`)."""
import asyncio
import os
import threading
import time

import redis

from ricloud_server.hub import Hub, Reservations

URL = os.environ.get("REDIS_URL") or os.environ.get("CELERY_BROKER_URL") or "redis://127.0.0.1:6379/15"


def channel_name(label: str) -> str:
    return f"ricloud:poll:{label}-{os.getpid()}-{time.monotonic()}"


async def _until(predicate, what: str) -> None:
    for _ in range(300):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting until {what}")


async def _started(hub: Hub) -> None:
    hub.start()
    await _until(lambda: hub.up, "the hub subscribed")


async def _confirmed(hub: Hub, channel: str) -> float:
    """Wait until the hub vouches for `channel` from now on; returns that moment."""
    await _until(lambda: hub.quiet_since([channel], time.monotonic()), f"{channel} was subscribed")
    return time.monotonic()


def subscribers(channel: str) -> int:
    return dict(redis.Redis.from_url(URL).pubsub_numsub(channel))[channel.encode()]


def test_quiet_since_vouches_only_for_confirmed_channels_with_no_notice_since():
    async def scenario():
        hub = Hub(URL)
        channel, other = channel_name("x"), channel_name("other")
        before = time.monotonic()
        assert not hub.quiet_since([channel], before)  # not started: unknown
        await _started(hub)
        assert not hub.quiet_since([channel], time.monotonic())  # not subscribed: unknown
        event = asyncio.Event()
        hub.watch([channel, other], event)
        since = await _confirmed(hub, channel)
        await _confirmed(hub, other)
        assert not hub.quiet_since([channel], before)  # subscribed after `before`: unknown
        assert hub.quiet_since([channel, other], since)
        redis.Redis.from_url(URL).publish(channel, "1")
        await _until(lambda: not hub.quiet_since([channel], since), f"{channel} was heard")
        assert not hub.quiet_since([other, channel], since)  # any of the channels
        assert hub.quiet_since([channel], time.monotonic())  # nothing heard after a later moment
        hub.unwatch([channel, other], event)
        assert not hub.quiet_since([channel], time.monotonic())  # unsubscribed: unknown again
        hub.watch([channel], event)
        await _confirmed(hub, channel)
        await hub.stop()
        assert not hub.quiet_since([channel], time.monotonic())  # down: unknown again

    asyncio.run(scenario())


def test_a_watcher_is_woken_when_its_subscription_takes_effect_then_by_notices():
    """A notice published before the subscription took effect is not heard: the confirmation
    wakes the watcher, which looks once, and later notices wake it as before."""
    async def scenario():
        hub = Hub(URL)
        await _started(hub)
        channel = channel_name("late")
        event = asyncio.Event()
        hub.watch([channel], event)
        assert not hub.quiet_since([channel], time.monotonic())  # → a hold checks at once
        await asyncio.wait_for(event.wait(), 2)  # the confirmation
        event.clear()
        redis.Redis.from_url(URL).publish(channel, "1")
        await asyncio.wait_for(event.wait(), 2)
        hub.unwatch([channel], event)
        await hub.stop()

    asyncio.run(scenario())


def test_a_notice_reaches_only_the_hubs_that_wait_for_it():
    """Each web process subscribes to its own requests' channels: a notice wakes no other."""
    async def scenario():
        holder, other = Hub(URL), Hub(URL)
        await _started(holder)
        await _started(other)
        channel = channel_name("mine")
        event = asyncio.Event()
        holder.watch([channel], event)
        await _confirmed(holder, channel)
        assert subscribers(channel) == 1
        event.clear()
        redis.Redis.from_url(URL).publish(channel, '["done"]')
        await asyncio.wait_for(event.wait(), 2)
        assert holder.message([channel]) == b'["done"]'
        assert channel in holder._heard and channel not in other._heard
        holder.unwatch([channel], event)
        await _until(lambda: subscribers(channel) == 0, "the last watcher's channel was unsubscribed")
        await holder.stop()
        await other.stop()

    asyncio.run(scenario())


def test_a_reservation_from_another_thread_subscribes_ahead_of_the_watch():
    """A view reserves its poll's channel from a pool thread before its work's message leaves;
    the hold that follows may then skip its first look. The channel stays subscribed while
    reserved or watched, and goes with the last of them."""
    async def scenario():
        hub = Hub(URL)
        await _started(hub)
        channel = channel_name("reserved")
        reservations = Reservations()
        before = time.monotonic()  # the view's start: its work unsettled
        thread = threading.Thread(target=hub.reserve_threadsafe, args=([channel], reservations))
        thread.start()
        thread.join()
        since = await _confirmed(hub, channel)
        # Confirmed after `before`: vouched for only up to when nothing could be published yet.
        assert not hub.quiet_since([channel], before)
        assert hub.quiet_since([channel], before, subscribed_by=since)
        event = asyncio.Event()
        hub.watch([channel], event)
        assert hub.quiet_since([channel], since) and not event.is_set()  # no look needed
        hub.release(reservations)
        assert hub.quiet_since([channel], since)  # still watched
        redis.Redis.from_url(URL).publish(channel, "1")
        await asyncio.wait_for(event.wait(), 2)
        assert not hub.quiet_since([channel], before, subscribed_by=since)  # heard since `before`
        hub.unwatch([channel], event)
        await _until(lambda: subscribers(channel) == 0, "the channel was unsubscribed")
        await hub.stop()

    asyncio.run(scenario())


def test_a_reservation_that_comes_after_its_request_ended_is_dropped():
    """A request cancelled while its view ran: its thread's reservation reaches the loop after the
    request released its reservations, and must not keep the channel subscribed for good."""
    async def scenario():
        hub = Hub(URL)
        await _started(hub)
        channel = channel_name("late-reservation")
        reservations = Reservations()
        hub.release(reservations)
        thread = threading.Thread(target=hub.reserve_threadsafe, args=([channel], reservations))
        thread.start()
        thread.join()
        await asyncio.sleep(0.1)
        assert hub.subscribed == 0 and subscribers(channel) == 0
        await hub.stop()

    asyncio.run(scenario())


def test_a_channel_watched_again_while_its_unsubscription_is_on_its_way_stays_subscribed():
    async def scenario():
        hub = Hub(URL)
        await _started(hub)
        channel = channel_name("again")
        first, second = asyncio.Event(), asyncio.Event()
        hub.watch([channel], first)
        await _confirmed(hub, channel)
        hub.unwatch([channel], first)
        for _ in range(100):  # the flush runs on the loop's next turns; the answer needs a round trip
            await asyncio.sleep(0)
            if hub._unconfirmed.get(channel):
                break
        else:
            raise AssertionError("the UNSUBSCRIBE was not sent")
        hub.watch([channel], second)  # before its answer came: SUBSCRIBE follows UNSUBSCRIBE
        await _confirmed(hub, channel)
        await asyncio.sleep(0.05)  # every answer in
        assert subscribers(channel) == 1 and hub.quiet_since([channel], time.monotonic())
        second.clear()
        redis.Redis.from_url(URL).publish(channel, "1")
        await asyncio.wait_for(second.wait(), 2)
        hub.unwatch([channel], second)
        await hub.stop()

    asyncio.run(scenario())


def test_old_moments_are_not_vouched_for(monkeypatch):
    """Past the hub's memory (HEARD_SECONDS) it cannot say that nothing came: check."""
    import ricloud_server.hub as hub_module

    async def scenario():
        monkeypatch.setattr(hub_module, "HEARD_SECONDS", 0.0)
        hub = Hub(URL)
        await _started(hub)
        channel = channel_name("y")
        hub.watch([channel], asyncio.Event())
        await _until(lambda: hub.subscribed == 1, "the channel was subscribed")
        since = time.monotonic()
        await asyncio.sleep(0.01)
        assert not hub.quiet_since([channel], since)
        await hub.stop()

    asyncio.run(scenario())


def test_a_message_beyond_a_wake_up_is_kept_while_its_channel_is_watched():
    """A completed poll sent by its worker (transitions.py `_completion_notice`) is what a hold on
    its channel is handed; plain wake-ups are not kept, nor is anything on a channel nobody
    watches, and a channel's message goes with its last watcher."""
    async def scenario():
        hub = Hub(URL)
        await _started(hub)
        watched, unwatched = channel_name("kept"), channel_name("not-kept")
        event = asyncio.Event()
        hub.watch([watched], event)
        await _confirmed(hub, watched)
        event.clear()
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
