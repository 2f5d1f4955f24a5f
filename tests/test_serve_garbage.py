"""A request served by the web process leaves no reference cycles behind.

Objects in a cycle outlive their request until the cyclic garbage collector finds them; at
hundreds of requests a second that meant collections several times a second and full ones that
paused a web process for 60-150 ms, the tail of `POST /polls` latency under load. Each request
here runs through the web server's own request path (`Server._respond`: the middleware, DRF, the
rendering, `release`) and the objects it left in cycles are read from the collector. (List
endpoints and rejected bodies still leave some: django-filter builds a form class per request,
and an exception's traceback holds its frames.)
"""
import gc
import json
import tempfile

import pytest
from django.core import signals
from django.db import close_old_connections

from ricloud_server.serve import application
from tasks_app.models import Poll

pytestmark = pytest.mark.django_db


@pytest.fixture
def call(key):
    def call(method, path, body=None, content_type=b"application/json"):
        data = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
        scope = {
            "type": "http", "method": method, "path": path, "raw_path": path.encode(), "root_path": "",
            "query_string": b"", "scheme": "http", "http_version": "1.1",
            "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
            "headers": [(b"host", b"testserver"), (b"authorization", f"Token {key.plaintext_token}".encode()),
                        (b"content-type", content_type), (b"content-length", str(len(data)).encode())],
        }
        stream = tempfile.SpooledTemporaryFile()
        stream.write(data)
        stream.seek(0)
        # As Django's test client does: the test's transaction keeps its connection open.
        signals.request_started.disconnect(close_old_connections)
        signals.request_finished.disconnect(close_old_connections)
        try:
            status, _, content = application._respond(scope, stream)
        finally:
            signals.request_started.connect(close_old_connections)
            signals.request_finished.connect(close_old_connections)
        return status, json.loads(content)
    return call


def cyclic_garbage(request) -> str:
    """The types of the objects `request()` left in reference cycles."""
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        request()
        gc.collect()
        return ", ".join(sorted({type(obj).__qualname__ for obj in gc.garbage}))
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


@pytest.fixture
def session(call):
    status, user = call("POST", "/users", {"identifier": "garbage"})
    assert status == 201
    status, session = call("POST", "/sessions", {"source": {"user": user["id"], "type": "mocks.mock",
                                                            "identifier": "john@example.com"},
                                                 "payload": {"password": "x"}})
    assert status == 201
    return session


def test_creating_and_reading_a_poll_leaves_no_cycles(call, session):
    body = {"session": session["id"], "payload": {"info_types": ["account.info"]}}
    call("POST", "/polls", body)  # first use: lazily built caches are not garbage
    created = []
    assert cyclic_garbage(lambda: created.append(call("POST", "/polls", body))) == ""
    status, poll = created[0]
    assert status == 201 and poll["tasks_pending"] and Poll.objects.filter(id=poll["id"]).exists()
    call("GET", f"/polls/{poll['id']}")  # first use
    read = []
    assert cyclic_garbage(lambda: read.append(call("GET", f"/polls/{poll['id']}"))) == ""
    assert read[0] == (200, poll)
