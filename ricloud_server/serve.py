"""The web process: Django's synchronous stack on a thread pool, held connections on an event loop.

    gunicorn ricloud_server.serve:application -k uvicorn_worker.UvicornWorker   (the Procfile)

Short requests run exactly as under a threaded WSGI server: the sync middleware chain and views
on one of `RICLOUD_WEB_THREADS` pool threads, each keeping its persistent database connection.
Requests that wait (`Ricloud-Await` holds, aschannel streams) give their thread back: the view
answers with a marker (tasks_app/deferred.py) and the event loop waits on the process's Redis
subscription (hub.py), using a pool thread only for each check, scan and render. A held
connection therefore costs a few kilobytes and no thread and no database connection, and short
requests of every organisation keep the pool to themselves. (Django's own ASGI handler runs sync
views on a single thread per process; see docs/DECISIONS.md for the figures behind this choice.)

Fairness: at most `RICLOUD_HELD_PER_KEY` holds and streams per key and web process; past it, a
429 in the path's envelope, before any work is done.
"""
import asyncio
import gc
import hashlib
import json
import logging
import os
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from urllib.parse import parse_qs

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ricloud_server.settings")

from django.conf import settings  # noqa: E402
from django.core import signals  # noqa: E402
from django.core.handlers.asgi import ASGIRequest, get_script_prefix  # noqa: E402
from django.core.handlers.exception import response_for_exception  # noqa: E402
from django.urls import set_script_prefix  # noqa: E402

from ricloud_server.wsgi import application as wsgi_handler  # noqa: E402 - django.setup() and start-up checks

# isort: split
from asapi_app.stream import scan  # noqa: E402 - models: after django.setup()
from tasks_app.api.release import release  # noqa: E402
from tasks_app.authcache import HubListener  # noqa: E402
from tasks_app.deferred import DEFERRABLE, RESERVE, Deferred, Held, Stream  # noqa: E402
from tasks_app.middleware import OUTAGES, OutageMiddleware, drop_broken_connections  # noqa: E402
from tasks_app.notify import stream_channel  # noqa: E402

from . import metrics  # noqa: E402
from .hub import Hub, Reservations  # noqa: E402
from .requestlog import finish_deferred, incoming_request_id  # noqa: E402

__all__ = ["application", "Server"]

logger = logging.getLogger(__name__)

CARRIED_HEADERS_SKIP = {"content-type", "content-length"}
RECHECK_SECONDS_WHEN_DOWN = 1.0


def _v2(path: str) -> bool:
    return path.endswith("/")  # v2 paths keep their trailing slash; v3 paths have none


def _envelope(path: str, status: int, code: str, message: str, headers=()) -> tuple:
    if _v2(path):
        body = {"success": False, "error": message, "errors": {"__all__": [[message, code.replace("-", "_")]]}}
    else:
        body = {"error": code, "message": message}
    return status, [(b"content-type", b"application/json"), *headers], json.dumps(body).encode()


def freeze_start_up_heap() -> None:
    """Load the URL configuration (every view, serializer and filter), then move what start-up
    made to the collector's permanent generation: a full collection no longer walks the ~100,000
    objects of Django, DRF and the project's modules that live as long as the process."""
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 - imports the views
    gc.collect()
    gc.freeze()


class Server:
    def __init__(self):
        self.handler = wsgi_handler  # the sync middleware chain, loaded once
        self.pool = ThreadPoolExecutor(settings.RICLOUD_WEB_THREADS, thread_name_prefix="web")
        self.hub = Hub(settings.REDIS_URL, listener=HubListener())
        self.held = Counter()
        self.max_body = max(settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 0, settings.RICLOUD_MAX_BODY_BYTES) * 4

    # ASGI entry point
    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if scope["type"] != "http":
            return
        self.hub.start()
        headers = dict(scope["headers"])
        holder = self._holder(scope, headers)
        if holder is not None:
            kind = "stream" if scope["path"] == "/stream/" else "await"
            if self.held[holder] >= settings.RICLOUD_HELD_PER_KEY:
                message = (f"This key already holds {settings.RICLOUD_HELD_PER_KEY} waiting requests or streams;"
                           " close one or retry without Ricloud-Await.")
                metrics.held_refused(kind)
                request_id = incoming_request_id(headers.get(b"x-request-id", b"").decode("latin1"))
                return await self._send(send, *_envelope(scope["path"], 429, "too-many-held", message,
                                                         [(b"retry-after", b"1"),
                                                          (b"x-request-id", request_id.encode())]))
            self.held[holder] += 1
            metrics.held(kind, 1)
        try:
            body = await self._read_body(scope, receive, headers)
            if body is None:
                return
            loop = asyncio.get_running_loop()
            # A stream's wake-ups are watched before the request runs: the view reads the first
            # deliveries in the same pool call, and nothing published meanwhile is missed.
            wake, channels = asyncio.Event(), self._stream_channels(scope)
            self.hub.watch(channels, wake)
            marker, reserved = None, Reservations()
            try:
                result = await loop.run_in_executor(self.pool, self._respond, scope, body, reserved)
                if isinstance(result, Held):
                    marker, result = result, await self._hold(result)
                elif isinstance(result, Stream):
                    from asapi_app.astream import serve_stream

                    try:
                        return await serve_stream(self, result, receive, send, wake, channels)
                    finally:
                        finish_deferred(result, 200)
            finally:
                self.hub.unwatch(channels, wake)
                self.hub.release(reserved)  # the hold watched them; else nothing will
            try:
                await self._send_result(result, send)
            finally:
                if marker is not None:  # a hold's log line and metrics, once its answer is on its way
                    finish_deferred(marker, result[0])
        finally:
            if holder is not None:
                metrics.held(kind, -1)
                self.held[holder] -= 1
                if not self.held[holder]:
                    del self.held[holder]

    def _holder(self, scope, headers) -> str | None:
        """The key (by its Authorization header) a held request or stream counts against."""
        waits = scope["path"] == "/stream/" or (
            scope["method"] == "POST" and headers.get(b"ricloud-await", b"0").strip() not in (b"", b"0"))
        if not waits:
            return None
        return hashlib.sha256(headers.get(b"authorization", b"")).hexdigest()

    @staticmethod
    def _stream_channels(scope) -> list[str]:
        if scope["path"] != "/stream/":
            return []
        names = parse_qs(scope.get("query_string", b"").decode("latin1")).get("stream") or [""]
        return [stream_channel(names[0].strip())] if names[0].strip() else []

    async def _read_body(self, scope, receive, headers):
        body = tempfile.SpooledTemporaryFile(max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE, mode="w+b")
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                body.close()
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                # Far past every limit the views apply: stop reading; the views answer 413/400
                # from Content-Length, which the client sent.
                break
            body.write(chunk)
            if not message.get("more_body", False):
                break
        body.seek(0)
        return body

    # pool-thread side
    def _respond(self, scope, body, reserved=None):
        """Run the sync stack for one request (as a threaded WSGI server would). `reserved`: the
        channels the view reserved on the hub (deferred.RESERVE), for the caller to release."""
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)
        try:
            request = ASGIRequest(scope, body)
        except UnicodeDecodeError:  # a query string that is not UTF-8
            signals.request_finished.send(sender=self.__class__)
            return _envelope(scope["path"], 400, "invalid-parameter", "The query string is not valid UTF-8.")
        else:
            request.META[DEFERRABLE] = True
            if reserved is not None:
                request.META[RESERVE] = partial(self.hub.reserve_threadsafe, reservations=reserved)
            response = self.handler.get_response(request)
            if isinstance(response, Stream):
                try:
                    response.first = scan(response.key.stream, response.sent)
                except OUTAGES as exc:
                    return self._outage(request, exc)
            if isinstance(response, Deferred):
                response.request = request
                signals.request_finished.send(sender=self.__class__)
                return response
        return self._materialise(response)

    def _materialise(self, response):
        headers = [(name.encode("latin1"), value.encode("latin1")) for name, value in response.items()]
        headers += [(b"set-cookie", cookie.output(header="").encode("ascii").strip())
                    for cookie in response.cookies.values()]
        if response.streaming:
            return response.status_code, headers, response
        content = response.content
        if not response.has_header("Content-Length"):
            headers.append((b"content-length", str(len(content)).encode()))
        response.close()  # request_finished, on this thread: its connections are checked here
        release(response)
        return response.status_code, headers, content

    def in_request(self, fn, *args):
        """Run `fn` on a pool thread between request_started and request_finished (connection
        hygiene, as for any request)."""
        def call():
            signals.request_started.send(sender=self.__class__)
            try:
                return fn(*args)
            except OUTAGES as exc:
                from django import db

                if isinstance(exc, db.Error):
                    drop_broken_connections()
                raise
            finally:
                signals.request_finished.send(sender=self.__class__)
        return asyncio.get_running_loop().run_in_executor(self.pool, call)

    def _settle(self, held: Held, final: bool):
        """On a pool thread: the held request's final response once its work has settled (or at
        its deadline, `final`), else None. One hop serves the check and the answer."""
        signals.request_started.send(sender=self.__class__)
        try:
            if not final:
                try:
                    if not held.settled():
                        return None
                except OUTAGES as exc:
                    from django import db

                    if isinstance(exc, db.Error):
                        drop_broken_connections()
                    return None  # not settled as far as we can tell; the deadline answers (503 if still down)
            return self._finish(held)
        finally:
            signals.request_finished.send(sender=self.__class__)

    def _finish(self, held: Held):
        """The held request's final response, rendered, with the headers the middleware gave it."""
        try:
            response = held.finish()
        except OUTAGES as exc:
            response = OutageMiddleware(None).process_exception(held.request, exc)
        except Exception as exc:  # noqa: BLE001 - answered as Django answers any exception
            response = response_for_exception(held.request, exc)
        for name, value in held.items():
            if name.lower() not in CARRIED_HEADERS_SKIP and not response.has_header(name):
                response[name] = value
        return self._materialise(response)

    def _answer_from(self, held: Held, message):
        """On the event loop: the held request's final response when `message` (what the hub last
        heard on its channels beyond a plain wake-up) settles its work by itself and carries all
        its answer needs (`Held.accept`: no database), else None. Rendering here saves the two
        thread hops of a pool call, ~0.2 ms of the answer; anything else goes to `_settle`."""
        if message is None or held.accept is None or not held.accept(message):
            return None
        return self._finish(held)

    def _outage(self, request, exc):
        """The enveloped 503 (Retry-After) for an outage met outside the middleware chain."""
        from django import db

        if isinstance(exc, db.Error):
            drop_broken_connections()
        return self._materialise(OutageMiddleware(None).process_exception(request, exc))

    # event-loop side
    async def _hold(self, held: Held):
        """Check, wait for a wake-up (or, with Redis down, a short timer), check again; answer once
        settled or at the deadline. The request holds no thread and no connection in between."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        self.hub.watch(held.channels, event)  # before the first check: no wake-up can slip by
        deadline = time.monotonic() + held.seconds
        # Work that was unsettled when the view made it, with no notification since: nothing to
        # check before the first wake-up.
        check = held.unsettled_since is None or not self.hub.quiet_since(held.channels, held.unsettled_since,
                                                                          held.subscribed_by)
        try:
            while True:
                if check:
                    event.clear()
                    final = time.monotonic() >= deadline
                    result = None if final else self._answer_from(held, self.hub.message(held.channels))
                    if result is None:
                        result = await loop.run_in_executor(self.pool, self._settle, held, final)
                    if result is not None:
                        return result
                check = True
                remaining = deadline - time.monotonic()
                wait = remaining if self.hub.up else min(remaining, RECHECK_SECONDS_WHEN_DOWN)
                try:
                    await asyncio.wait_for(event.wait(), max(wait, 0))
                except TimeoutError:
                    pass
        finally:
            self.hub.unwatch(held.channels, event)

    async def _send_result(self, result, send):
        status, headers, content = result
        if hasattr(content, "streaming_content"):
            return await self._send_streaming(status, headers, content, send)
        await self._send(send, status, headers, content)

    async def _send_streaming(self, status, headers, response, send):
        loop = asyncio.get_running_loop()
        iterator = iter(response.streaming_content)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        try:
            while True:
                chunk = await loop.run_in_executor(self.pool, next, iterator, None)
                if chunk is None:
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await loop.run_in_executor(self.pool, response.close)

    @staticmethod
    async def _send(send, status, headers, content):
        if not any(name.lower() == b"content-length" for name, _ in headers):
            headers = [*headers, (b"content-length", str(len(content)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    async def _lifespan(self, receive, send):
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                freeze_start_up_heap()
                self.hub.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.hub.stop()
                self.pool.shutdown(wait=False, cancel_futures=True)
                await send({"type": "lifespan.shutdown.complete"})
                return


application = Server()
