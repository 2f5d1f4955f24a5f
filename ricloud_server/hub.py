"""One Redis subscription per web process, fanned out to the requests waiting in it.

Every wake-up the engine publishes is on a `ricloud:…` channel (tasks_app/notify.py,
tasks_app/services/awaiting.py) named after what changed (a poll, a task, a stream). The hub
subscribes to exactly the channels its process's requests wait on, on one connection: a channel
is subscribed when its first waiter (or reservation) comes and unsubscribed when its last goes, so
a notice wakes only the web processes that hold a request waiting for it, however many there
are. A waiting request registers an `asyncio.Event` under its channels: no connection and no
Redis round trip of its own.

A notice published before its channel's subscription took effect is not heard: the subscription
of a channel is *confirmed* when Redis acknowledges it, and every waiter of the channel is woken
then, to look once (`quiet_since` vouches only for moments after the confirmation). A request
that knows its channel before it starts the work (a held `POST /polls`, whose poll id exists
before its statement) reserves it from its pool thread (`reserve_threadsafe`) while its statement
runs: when the confirmation comes before the work's message leaves (as it does, in the time the
statement takes), the hold may skip its first look.

Redis down: the hub reconnects with backoff and, while it is down, reports `up` false so that
waiters re-check on a short timer; on every (re)connection it subscribes again and wakes every
waiter, since notifications may have been lost meanwhile. Notifications only say "look again": a
lost one delays an answer, never changes it.
"""
import asyncio
import collections
import logging
import time

import redis
import redis.asyncio

__all__ = ["Hub", "HUB_CHANNEL", "Reservations"]

logger = logging.getLogger(__name__)

HUB_CHANNEL = "ricloud:hub"  # subscribed for as long as the hub is up (nothing is published on it)
HEARD_SECONDS = 30.0  # how long the hub remembers that a channel was notified


class Reservations:
    """The channels one request reserved on its process's hub (`Hub.reserve_threadsafe`), released
    together when the request ends (`Hub.release`)."""

    __slots__ = ("open", "channels")

    def __init__(self):
        self.open, self.channels = True, []


def _name(channel) -> str:
    return channel.decode() if isinstance(channel, bytes) else channel


class Hub:
    def __init__(self, url: str, listener=None):
        self.url = url
        # Optional: its `channels` are subscribed for as long as the hub is up; told when the
        # subscription starts (`await subscribed(client)`, before anything heard since is
        # handled), of messages on its channels, and when it is lost (tasks_app/authcache.py
        # keeps the auth cache generation this way).
        self.listener = listener
        self.up = False
        self._static = (HUB_CHANNEL, *(listener.channels if listener is not None else ()))
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._reserved: collections.Counter = collections.Counter()  # channel → reservations (`reserve`)
        self._wanted: set[str] = set()  # channels with waiters or reservations
        self._confirmed: dict[str, float] = {}  # wanted channel → monotonic time Redis confirmed it
        self._unconfirmed: collections.Counter = collections.Counter()  # channel → (un)subscribes sent, not yet answered
        self._to_subscribe: set[str] = set()
        self._to_unsubscribe: set[str] = set()
        self._pubsub = None  # the subscription's connection, while it is usable
        self._flushing = False
        self._flush_task: asyncio.Task | None = None  # held: the loop keeps only weak references
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._heard: collections.OrderedDict[str, float] = collections.OrderedDict()  # channel → last notice
        # channel → the last message other than a plain wake-up ("1"), kept while someone watches it
        self._messages: dict[str, bytes] = {}

    def quiet_since(self, channels, since: float, subscribed_by: float | None = None) -> bool:
        """True when no notification on `channels` can have been published since `since` (a
        monotonic time of this process) without the hub hearing it: none of them was heard since,
        and each one's subscription was confirmed by then, or by `subscribed_by` when the caller
        knows that nothing could be published on them before that later moment, and has stayed
        up. A view that knows its work was unsettled at `since` may then skip the first check of
        a hold."""
        if not self.up or since < time.monotonic() - HEARD_SECONDS:
            return False
        confirmed_by = since if subscribed_by is None else subscribed_by
        for channel in channels:
            confirmed = self._confirmed.get(channel)
            if confirmed is None or confirmed > confirmed_by or self._heard.get(channel, float("-inf")) >= since:
                return False
        return True

    def _hear(self, channel: str) -> None:
        now = time.monotonic()
        heard = self._heard
        heard[channel] = now
        heard.move_to_end(channel)
        while heard and next(iter(heard.values())) < now - HEARD_SECONDS:
            heard.popitem(last=False)

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._loop = asyncio.get_running_loop()
            self._task = self._loop.create_task(self._run(), name="ricloud-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                pass

    # --- what is waited on (all on the event loop, but `reserve_threadsafe`) --------------------

    def watch(self, channels, event: asyncio.Event) -> None:
        for channel in channels:
            self._waiters.setdefault(channel, set()).add(event)
            self._want(channel)

    def unwatch(self, channels, event: asyncio.Event) -> None:
        for channel in channels:
            waiting = self._waiters.get(channel)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self._waiters[channel]
                    self._messages.pop(channel, None)
                    self._release(channel)

    def reserve_threadsafe(self, channels, reservations: "Reservations") -> None:
        """From a pool thread: subscribe to `channels` now, ahead of the watch that will follow,
        for as long as `reservations` (one request's) is not released. Recorded on the event loop:
        nothing is reserved once `release` ran, so nothing outlives the request."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._reserve_for, reservations, list(channels))

    def _reserve_for(self, reservations: "Reservations", channels) -> None:
        if reservations.open:
            reservations.channels.extend(channels)
            self.reserve(channels)

    def release(self, reservations: "Reservations") -> None:
        reservations.open = False
        self.unreserve(reservations.channels)
        reservations.channels = []

    def reserve(self, channels) -> None:
        for channel in channels:
            self._reserved[channel] += 1
            self._want(channel)

    def unreserve(self, channels) -> None:
        for channel in channels:
            if self._reserved[channel] > 1:
                self._reserved[channel] -= 1
            else:
                self._reserved.pop(channel, None)
                self._release(channel)

    def _want(self, channel: str) -> None:
        if channel in self._wanted or channel in self._static:
            return
        self._wanted.add(channel)
        self._to_unsubscribe.discard(channel)
        self._to_subscribe.add(channel)
        self._flush_soon()

    def _release(self, channel: str) -> None:
        if channel not in self._wanted or channel in self._waiters or self._reserved.get(channel) \
                or channel in self._static:
            return
        self._wanted.discard(channel)
        self._confirmed.pop(channel, None)
        self._to_subscribe.discard(channel)
        self._to_unsubscribe.add(channel)
        self._flush_soon()

    def _flush_soon(self) -> None:
        if not self._flushing and self._pubsub is not None and self._loop is not None:
            self._flushing = True
            self._flush_task = self._loop.create_task(self._flush(self._pubsub))

    async def _flush(self, pubsub) -> None:
        """Send the subscriptions and unsubscriptions asked for since the last flush, in one
        command each, on `pubsub` while it is the hub's connection. A broken connection is the
        reader's to notice: it reconnects and subscribes to every wanted channel again."""
        try:
            # The connection is checked again before each command: one replaced meanwhile has its
            # own counts, and subscribes to every wanted channel itself.
            while self._pubsub is pubsub and (self._to_subscribe or self._to_unsubscribe):
                if self._to_unsubscribe:
                    unsubscribe = sorted(self._to_unsubscribe)
                    self._to_unsubscribe.clear()
                    self._unconfirmed.update(unsubscribe)
                    await pubsub.unsubscribe(*unsubscribe)
                if self._to_subscribe and self._pubsub is pubsub:
                    subscribe = sorted(self._to_subscribe)
                    self._to_subscribe.clear()
                    self._unconfirmed.update(subscribe)
                    await pubsub.subscribe(*subscribe)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            logger.debug("hub: could not send a subscription change (%r)", exc)
        finally:
            if self._pubsub is pubsub:  # a new connection starts with flushing off (`_run`)
                self._flushing = False

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

    @property
    def subscribed(self) -> int:
        """How many channels the subscription holds beyond the hub's own (for tests and metrics)."""
        return len(self._confirmed)

    def _wake(self, channel: str) -> None:
        for event in self._waiters.get(channel, ()):
            event.set()

    def _wake_all(self) -> None:
        for events in self._waiters.values():
            for event in events:
                event.set()

    # --- the subscription -----------------------------------------------------------------------

    def _confirm(self, kind: str, channel: str) -> bool:
        """Count Redis's answer to a (un)subscription; True when it confirms the subscription of
        a wanted channel that nothing sent since may undo."""
        left = self._unconfirmed[channel] - 1
        if left > 0:
            self._unconfirmed[channel] = left
            return False
        self._unconfirmed.pop(channel, None)
        return kind == "subscribe" and (channel in self._wanted or channel in self._static)

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            options = {} if self.url.startswith("unix") else {"socket_keepalive": True, "socket_connect_timeout": 5}
            client = redis.asyncio.Redis.from_url(self.url, **options)
            pubsub = client.pubsub()
            self._confirmed.clear()
            self._unconfirmed.clear()
            self._to_subscribe.clear()
            self._to_unsubscribe.clear()
            static_left = set(self._static)
            try:
                channels = [*self._static, *sorted(self._wanted - set(self._static))]
                self._unconfirmed.update(channels)
                await pubsub.subscribe(*channels)
                self._pubsub, self._flushing = pubsub, False
                self._flush_soon()  # anything wanted while the command was on its way
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is None:
                        continue
                    kind, channel = message["type"], _name(message["channel"])
                    if kind in ("subscribe", "unsubscribe"):
                        if not self._confirm(kind, channel):
                            continue
                        if channel in static_left:
                            static_left.discard(channel)
                            if not static_left:
                                if self.listener is not None:
                                    await self.listener.subscribed(client)
                                if not self.up:
                                    logger.info("hub: subscribed")
                                self.up, backoff = True, 0.1
                                self._wake_all()  # anything published while we were away is looked at
                            continue
                        self._confirmed[channel] = time.monotonic()
                        self._wake(channel)  # a notice may have come before the subscription took effect
                    elif kind == "message":
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
                self._pubsub = None
                self._wake_all()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                self.up, self._pubsub = False, None
                self._confirmed.clear()
                if self.listener is not None:
                    self.listener.lost()
                try:
                    await pubsub.aclose()
                    await client.aclose()
                except Exception:  # noqa: BLE001 - the connection is already gone
                    pass
