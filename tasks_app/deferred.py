"""Responses that the web server finishes on its event loop instead of holding a thread.

A `Ricloud-Await` hold and an aschannel stream spend nearly all their life waiting. Served by
`ricloud_server.serve` (the Procfile's web process), a view answers such a request with a marker:
the thread and its database connection go back to the pool at once, and the server waits on the
process's Redis subscription, calling back into a pool thread only to check and to render. Under
any other server (WSGI, the test client) `deferrable(request)` is false and views block as
before, so both paths give the same answers.
"""
from django.http import HttpResponse

__all__ = ["DEFERRABLE", "RESERVE", "deferrable", "Deferred", "Held", "Stream"]

DEFERRABLE = "ricloud.deferrable"  # request.META flag set by ricloud_server.serve
# request.META under ricloud_server.serve: `reserve(channels)`, called from the view's thread, has
# the process's hub subscribe to channels a hold will watch, before the work that notifies them starts.
RESERVE = "ricloud.reserve"


def deferrable(request) -> bool:
    return bool(request.META.get(DEFERRABLE))


class Deferred(HttpResponse):
    """A placeholder the middleware sees like any response; the server replaces it. Headers the
    middleware adds to it are carried over to the final response."""

    def __init__(self):
        super().__init__(status=200)


class Held(Deferred):
    """Answer with `finish()` once `settled()` is true (checked on every wake-up of `channels`)
    or after `seconds`. Both are called on a pool thread; `finish` returns a rendered response.
    `unsettled_since`: a `time.monotonic()` at which the work was known not to be settled (None:
    unknown, check at once). `subscribed_by`: a later moment before which no notice on `channels`
    can have been published (default `unsettled_since`): the process's subscription to them must
    have been confirmed by then for the first check to be skipped. `accept(message)`: whether a
    message heard on `channels` settles the work by itself, and then says all `finish` needs:
    both are then called on the event loop, and must not touch the database; else `settled()` is
    asked on a pool thread."""

    def __init__(self, channels: list[str], settled, finish, seconds: float, unsettled_since: float | None = None,
                 accept=None, subscribed_by: float | None = None):
        super().__init__()
        self.channels, self.settled, self.finish, self.seconds = channels, settled, finish, seconds
        self.unsettled_since, self.accept, self.subscribed_by = unsettled_since, accept, subscribed_by


class Stream(Deferred):
    """An aschannel stream of `key`'s deliveries (asapi_app/astream.py)."""

    def __init__(self, key, content_type: str = "application/octet-stream"):
        super().__init__()
        self.key = key
        self.sent: set = set()  # delivery ids sent on this connection
        self.first: list = []  # the first scan, read by the server before the response starts
        self["Content-Type"] = content_type
