"""GET /stream/ during an outage: Redis or Postgres down before the stream starts is a 503 with
Retry-After in the v2 envelope; an outage once it has started ends the stream cleanly (the
client sees its end and reconnects), never an error inside the response."""
import json
import time

import pytest
from django.db import connection, connections

from tests.asapi_app.conftest import v2_client
from tests.servers import RedisServer, free_port

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def fast_heartbeat(settings):
    settings.RICLOUD_ASCHANNEL_HEARTBEAT_SECONDS = 0.2


@pytest.fixture
def own_redis(settings):
    """A private redis-server serving pub/sub (the suite's is never stopped)."""
    server = RedisServer().start()
    settings.REDIS_URL = server.url
    yield server
    server.close()


def open_stream(key):
    return v2_client(key).get("/stream/", {"stream": key.stream})


def assert_v2_503(response):
    assert response.status_code == 503, response.content
    assert response["Content-Type"] == "application/json"
    assert int(response["Retry-After"]) > 0
    body = json.loads(response.content)
    assert body["success"] is False and body["errors"]["__all__"][0][1] == "service_unavailable"


def read_to_end(frames, timeout: float = 10) -> list[bytes]:
    """The rest of a streaming response; fails if it does not end within `timeout` (heartbeats
    keep coming while it has not)."""
    rest, deadline = [], time.monotonic() + timeout
    for part in frames:
        rest.append(part)
        assert time.monotonic() < deadline, "the stream did not end"
    return rest


def test_redis_down_before_the_stream_starts_is_a_503(key, settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    assert_v2_503(open_stream(key))


@pytest.mark.skipif(connection.vendor != "postgresql", reason="a database server to be unreachable")
def test_postgres_down_before_the_stream_starts_is_a_503(key):
    assert v2_client(key).get("/account/").status_code == 200  # the key is cached: auth needs no query
    default = connections["default"]
    saved = dict(default.settings_dict)
    default.close()
    default.settings_dict.update(HOST="127.0.0.1", PORT=free_port())
    try:
        assert_v2_503(open_stream(key))
    finally:
        default.close()
        default.settings_dict.update(HOST=saved["HOST"], PORT=saved["PORT"])


def test_redis_going_down_mid_stream_ends_it_cleanly(key, own_redis, fast_heartbeat):
    response = open_stream(key)
    assert response.status_code == 200
    frames = iter(response.streaming_content)
    assert b"streaming-started" in next(frames)
    assert next(frames) == b"\r\n"  # a heartbeat: the stream is waiting on pub/sub
    own_redis.stop()
    rest = read_to_end(frames)
    assert all(part == b"\r\n" for part in rest)  # at most a heartbeat, then the end
    response.close()
    own_redis.start()
    response = open_stream(key)  # the client reconnects
    assert response.status_code == 200 and b"streaming-started" in next(iter(response.streaming_content))
    response.close()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="a database server to be unreachable")
def test_postgres_going_down_mid_stream_ends_it_cleanly(key, fast_heartbeat):
    response = open_stream(key)
    frames = iter(response.streaming_content)
    assert b"streaming-started" in next(frames)
    default = connections["default"]
    saved = dict(default.settings_dict)
    default.close()
    default.settings_dict.update(HOST="127.0.0.1", PORT=free_port())
    try:
        rest = read_to_end(frames)
    finally:
        default.close()
        default.settings_dict.update(HOST=saved["HOST"], PORT=saved["PORT"])
    assert all(part == b"\r\n" for part in rest)
    response.close()
