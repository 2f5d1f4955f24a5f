"""The aschannel stream on the web process's event loop (ricloud_server/serve.py).

A connected stream costs no thread and holds no database connection: it waits on the process's
Redis subscription (or its heartbeat timer) and uses a pool thread only to scan for deliveries.

Nothing is skipped: each wake-up scans every pending delivery of the stream and sends those this
connection has not sent yet (`stream.scan`).
"""
import asyncio
import json
import logging

from django.conf import settings

from tasks_app.middleware import OUTAGES
from tasks_app.notify import stream_channel

from .stream import BATCH, GREETING, frame, scan

__all__ = ["serve_stream"]

logger = logging.getLogger(__name__)


async def serve_stream(server, marker, receive, send, wake, channels) -> None:
    """Send `marker.key`'s stream. The server watched `channels` (waking `wake`) before the
    request ran and the view's pool call read the first deliveries (`marker.first`)."""
    stream = marker.key.stream
    if stream_channel(stream) not in channels:  # the stream was named in a POST body, not the URL
        channels = [*channels, stream_channel(stream)]
        server.hub.watch(channels, wake)
        try:
            marker.first += await server.in_request(scan, stream, marker.sent)
        except OUTAGES as exc:  # before the response started: a 503 in the envelope
            status, headers, body = await asyncio.get_running_loop().run_in_executor(
                server.pool, server._outage, marker.request, exc)
            await server._send(send, status, headers, body)
            server.hub.unwatch(channels, wake)
            return
    sent, batch = marker.sent, marker.first
    heartbeat = settings.RICLOUD_ASCHANNEL_HEARTBEAT_SECONDS
    gone = asyncio.get_running_loop().create_task(_disconnected(receive))
    try:
        headers = [(name.encode("latin1"), value.encode("latin1")) for name, value in marker.items()
                   if name.lower() != "content-length"]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await _write(send, frame({"type": "system"}, json.dumps(GREETING).encode("utf-8")))
        loop = asyncio.get_running_loop()
        last_write = loop.time()
        while not gone.done():
            # No wake.clear() here: a wake-up that came while the last scan ran (its delivery
            # committed after the scan's query) must not be lost; it is cleared before each scan.
            for _, frames in batch:
                for part in frames:
                    await _write(send, part)
                last_write = loop.time()
            if len(batch) < BATCH:
                # Wait for a wake-up, but never stay silent longer than the heartbeat interval.
                waiter = asyncio.ensure_future(wake.wait())
                done, _ = await asyncio.wait({waiter, gone}, timeout=max(0.0, last_write + heartbeat - loop.time()),
                                             return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if gone in done:
                    break
                if loop.time() >= last_write + heartbeat:
                    await _write(send, b"\r\n")
                    last_write = loop.time()
                if not done and server.hub.up:
                    batch = []
                    continue  # a quiet interval with the subscription up: nothing to scan
            wake.clear()  # before the scan: anything published from here on wakes the next one
            try:
                batch = await server.in_request(scan, stream, sent)
            except OUTAGES as exc:
                # The response has started: end it; the client reconnects and gets what is pending.
                logger.warning("aschannel %s ended: %s (%s)", stream, exc.__class__.__name__, exc)
                break
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except OSError:
        pass  # the client went away while we wrote
    finally:
        gone.cancel()
        server.hub.unwatch(channels, wake)


async def _write(send, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})


async def _disconnected(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
