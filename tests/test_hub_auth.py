"""A web process's hub keeps what authentication would otherwise ask Redis on every request
(tasks_app/authcache.py `heard`): the cache generation, and which addresses have failed
authentications counted. Against the real Redis, with the hub's own subscription."""
import asyncio
import os
import time

import pytest

from ricloud_server.hub import Hub
from tasks_app import authcache
from tasks_app.authcache import GENERATION_KEY, HubListener, heard
from tasks_app.notify import get_redis
from tasks_app.ratelimit import count_failed_auth, failed_auth_wait, failed_auth_window


@pytest.fixture(autouse=True)
def fresh(settings):
    settings.RICLOUD_RATE_LIMIT_FAILED_AUTH = "3/minute"
    heard.reset()
    yield
    heard.reset()


async def _until(predicate, what):
    for _ in range(300):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the hub did not {what}")


async def _hub(settings):
    hub = Hub(settings.REDIS_URL, listener=HubListener())
    hub.start()
    await _until(lambda: hub.up and heard.known, "subscribe and load")
    return hub


def address(number: int) -> str:
    """An address of the documentation range (IPv6, so with colons) that no earlier run counted."""
    return f"2001:db8:{os.getpid() % 65536:x}:{time.monotonic_ns() % 65536:x}::{number}"


def test_the_generation_is_heard_instead_of_read(settings):
    async def scenario():
        redis = get_redis()
        before = int(redis.get(GENERATION_KEY) or 0)
        hub = await _hub(settings)
        assert heard.generation == before
        assert authcache.generation() == str(before).encode()
        authcache._incr()  # what bump() publishes when a key, an organisation or permissions change
        await _until(lambda: heard.generation > before, "hear the bump")
        assert authcache.generation() == redis.get(GENERATION_KEY)
        # What the hub knows is what requests use: no Redis round trip for it.
        redis.set(GENERATION_KEY, before + 1000)
        assert int(authcache.generation()) < before + 1000
        heard.bumped(before)  # an older value heard late never goes back
        assert int(authcache.generation()) > before
        await hub.stop()
        assert not heard.known
        assert authcache.generation() == str(before + 1000).encode()  # down: Redis again

    asyncio.run(scenario())


def test_failing_addresses_are_heard_and_loaded(settings):
    async def scenario():
        early, late, clean = address(1), address(2), address(3)
        assert count_failed_auth(early) is None  # counted before the hub starts: loaded by its scan
        hub = await _hub(settings)
        assert heard.may_be_limited(early)
        assert not heard.may_be_limited(late)
        assert not heard.may_be_limited(clean)
        for _ in range(3):
            count_failed_auth(clean)
        assert count_failed_auth(clean) is not None  # over the limit (colons in the counter's key)
        await _until(lambda: heard.may_be_limited(clean), "hear the failures")
        assert failed_auth_wait(clean) is not None  # blocked in every process that heard it

        reads = []
        assert failed_auth_wait(late, read=lambda name: reads.append(name)) is None
        assert reads == [None]  # an address with no failures: only the generation, heard too
        await hub.stop()
        assert heard.may_be_limited(late)  # down: every address is checked in Redis again

    asyncio.run(scenario())


def test_counter_keys_name_their_address_and_window():
    assert failed_auth_window("ricloud:rate:authfail:2001:db8::1:60:29000000") == ("2001:db8::1", 29000001 * 60)
    assert failed_auth_window(b"ricloud:rate:authfail:10.0.0.1:3600:7") == ("10.0.0.1", 8 * 3600)
    assert failed_auth_window("ricloud:rate:authfail:garbage") is None
    assert failed_auth_window("ricloud:other") is None
