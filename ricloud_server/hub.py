"""One Redis subscription per web process, fanned out to the requests waiting in it.

Every wake-up the engine publishes is on a `ricloud:*` channel (tasks_app/notify.py,
tasks_app/services/awaiting.py). The hub pattern-subscribes to them once, so a waiting request
only registers an `asyncio.Event` under its channels: no Redis round trip, no connection per
request, and no window in which a notification can slip between subscribing and checking.

Redis down: the hub reconnects with backoff and, while it is down, reports `up` false so that
waiters re-check on a short timer; on every (re)connection it wakes every waiter, since
notifications may have been lost meanwhile. Notifications only say "look again": a lost one
delays an answer, never changes it.
"""
import asyncio
import collections
import logging
import time

import redis
import redis.asyncio

__all__ = ["Hub", "PATTERN"]

logger = logging.getLogger(__name__)

PATTERN = "ricloud:*"
HEARD_SECONDS = 30.0  # how long the hub remembers that a channel was notified


class Hub:
    def __init__(self, url: str, listener=None):
        self.url = url
        # Optional: told when the subscription starts (`await subscribed(client)`, before anything
        # heard since is handled), of messages on its `channels`, and when it is lost
        # (tasks_app/authcache.py keeps the auth cache generation this way).
        self.listener = listener
        self.up = False
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task | None = None
        self._up_since = float("inf")  # monotonic time of the subscription now in force
        self._heard: collections.OrderedDict[str, float] = collections.OrderedDict()  # channel → last notice
        # channel → the last message other than a plain wake-up ("1"), kept while someone watches it
        self._messages: dict[str, bytes] = {}

    def quiet_since(self, channels, since: float) -> bool:
        """True when no notification on `channels` can have been published since `since` (a
        monotonic time of this process): the subscription was already up then, has stayed up,
        and none of them was heard since. A view that knows its work was unsettled at `since`
        may then skip the first check of a hold."""
        if not self.up or self._up_since > since or since < time.monotonic() - HEARD_SECONDS:
            return False
        return all(self._heard.get(channel, float("-inf")) < since for channel in channels)

    def _hear(self, channel: str) -> None:
        now = time.monotonic()
        heard = self._heard
        heard[channel] = now
        heard.move_to_end(channel)
        while heard and next(iter(heard.values())) < now - HEARD_SECONDS:
            heard.popitem(last=False)

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="ricloud-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                pass

    def watch(self, channels, event: asyncio.Event) -> None:
        for channel in channels:
            self._waiters.setdefault(channel, set()).add(event)

    def unwatch(self, channels, event: asyncio.Event) -> None:
        for channel in channels:
            waiting = self._waiters.get(channel)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self._waiters[channel]
                    self._messages.pop(channel, None)

    def message(self, channels) -> bytes | None:
        """The last message heard on one of `channels` that said more than a plain wake-up (e.g. a
        completed poll, services/transitions.py `_completion_notice`), while they are watched."""
        for channel in channels:
            data = self._messages.get(channel)
            if data is not None:
                return data
        return None

    @property
    def waiting(self) -> int:
        return sum(len(events) for events in self._waiters.values())

    def _wake_all(self) -> None:
        for events in self._waiters.values():
            for event in events:
                event.set()

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            options = {} if self.url.startswith("unix") else {"socket_keepalive": True, "socket_connect_timeout": 5}
            client = redis.asyncio.Redis.from_url(self.url, **options)
            pubsub = client.pubsub()
            try:
                await pubsub.psubscribe(PATTERN)
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is None:
                        continue
                    if message["type"] == "psubscribe":
                        if self.listener is not None:
                            await self.listener.subscribed(client)
                        if not self.up:
                            logger.info("hub: subscribed to %s", PATTERN)
                            self._up_since = time.monotonic()
                        self.up, backoff = True, 0.1
                        self._wake_all()  # anything published while we were away is looked at
                    elif message["type"] == "pmessage":
                        channel = message["channel"]
                        channel = channel.decode() if isinstance(channel, bytes) else channel
                        if self.listener is not None and channel in self.listener.channels:
                            self.listener.on_message(channel, message["data"])
                            continue
                        self._hear(channel)
                        waiting = self._waiters.get(channel)
                        if waiting:
                            data = message["data"]
                            if data not in (b"1", "1"):
                                self._messages[channel] = data
                            for event in waiting:
                                event.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - whatever breaks the subscription, reconnect
                if self.up or not isinstance(exc, (redis.RedisError, OSError)):
                    logger.warning("hub: Redis subscription lost (%r); reconnecting", exc)
                self.up = False
                self._wake_all()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                self.up, self._up_since = False, float("inf")
                if self.listener is not None:
                    self.listener.lost()
                try:
                    await pubsub.aclose()
                    await client.aclose()
                except Exception:  # noqa: BLE001 - the connection is already gone
                    pass
