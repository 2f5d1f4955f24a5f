"""Held connections on the production web process: the Procfile's `web` line (gunicorn running
ricloud_server.serve under uvicorn workers) against the test database, with real Celery workers.

`Ricloud-Await` holds and aschannel streams must cost no thread and no database connection while
they wait, stay within a per-key cap, and never skip a delivery. Nothing here is timed beyond
generous bounds: the tests assert what a client sees.
"""
import asyncio
import json
import os
import time
from pathlib import Path

import psycopg2
import pytest
import redis
import requests
from django.conf import settings
from django.db import connection

from tasks_app.models import Delivery, Task
from tasks_app.notify import notify, stream_channel
from tasks_app.services.awaiting import poll_channel
from tasks_app.services.organisations import create_organisation

from .conftest import LiveApi, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


# --- a tiny asyncio HTTP client: thousands of connections without a thread each -------------------

async def http(port, method, path, token, body=b"", headers=None):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = {"Host": "test", "Authorization": f"Token {token}", "Content-Length": str(len(body)),
            "Connection": "close", **(headers or {})}
    writer.write(f"{method} {path} HTTP/1.1\r\n".encode() + "".join(f"{k}: {v}\r\n" for k, v in head.items()).encode()
                 + b"\r\n" + body)
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, content = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), content, head.decode("latin1").lower()


class RawStream:
    """An aschannel stream read as ricloud-py 2.x reads it: length-prefixed header and payload
    frames, a bare CRLF for a heartbeat."""

    @classmethod
    async def open(cls, port, token, stream):
        self = cls()
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        self.writer.write(f"GET /stream/?stream={stream} HTTP/1.1\r\nHost: test\r\nAuthorization: Token {token}\r\n\r\n"
                          .encode())
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        self.status = int(head.split(b" ", 2)[1])
        self.chunked = b"transfer-encoding: chunked" in head.lower()
        self.buffer = b""
        return self

    async def _fill(self, timeout):
        data = await asyncio.wait_for(self.reader.read(65536), timeout)
        if not data:
            raise EOFError
        if self.chunked:  # strip the HTTP/1.1 chunk framing
            self._raw = getattr(self, "_raw", b"") + data
            while True:
                size_line, sep, rest = self._raw.partition(b"\r\n")
                if not sep:
                    break
                size = int(size_line, 16)
                if len(rest) < size + 2:
                    break
                self.buffer += rest[:size]
                self._raw = rest[size + 2:]
                if size == 0:
                    break
        else:
            self.buffer += data

    async def _line(self, timeout):
        while b"\r\n" not in self.buffer:
            await self._fill(timeout)
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    async def _exact(self, n, timeout):
        while len(self.buffer) < n:
            await self._fill(timeout)
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    async def next(self, timeout=10):
        """('heartbeat', None) or (header dict, payload bytes)."""
        line = await self._line(timeout)
        if not line.strip():
            return "heartbeat", None
        header = json.loads((await self._exact(int(line), timeout))[:-2])
        length = int(await self._line(timeout))
        return header, (await self._exact(length, timeout))[:-2]

    def close(self):
        self.writer.close()


async def next_message(stream, heartbeats: int = 4):
    """The next message that is not a heartbeat; None after `heartbeats` heartbeats in a row."""
    for _ in range(heartbeats):
        message = await stream.next()
        if message[0] != "heartbeat":
            return message
    return None, None


def org_key(name):
    return create_organisation(name=name)[1]


def server_connections() -> int:
    """Postgres connections of the web process (its DATABASE_URL names it)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ricloud-web-test'"
                           " AND datname = current_database()")
            return cursor.fetchone()[0]
    finally:
        connection.close()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the production web process runs on a database server")
def test_holds_wait_without_threads_and_other_organisations_are_served(start_web):
    """300 Ricloud-Await holds on work that has not run (no worker yet) on a web process with two
    pool threads: another organisation's short requests are answered meanwhile, the database holds
    no more connections than the pool has threads, and once a worker runs the work every hold is
    answered with the settled poll."""
    web = start_web(RICLOUD_WEB_THREADS=2, RICLOUD_AWAIT_MAX_SECONDS=120)
    holder, other = org_key("Holder"), org_key("Other")
    api = LiveApi(web.url, holder)
    session = api.open_session(wait=False)
    body = json.dumps({"session": session["id"], "payload": {"info_types": ["account.info"]}}).encode()
    token = holder.plaintext_token

    def created_polls() -> int:
        try:
            return Task.objects.filter(organisation=holder.organisation, type="info").count()
        finally:
            connection.close()  # this helper thread's own connection is not the server's

    async def scenario():
        holds = [asyncio.ensure_future(http(web.port, "POST", "/polls", token, body, {"Ricloud-Await": "120"}))
                 for _ in range(300)]
        await asyncio.sleep(0)
        # wait until every poll was created (the holds are now waiting, each without a thread)
        deadline = time.monotonic() + 60
        while await asyncio.to_thread(created_polls) < 300:
            assert time.monotonic() < deadline, "the polls were not created"
            await asyncio.sleep(0.1)
        answers = [await http(web.port, "GET", "/organisation", other.plaintext_token) for _ in range(20)]
        connections = await asyncio.to_thread(server_connections)
        return holds, answers, connections

    loop = asyncio.new_event_loop()
    try:
        holds, answers, connections = loop.run_until_complete(scenario())
        assert [status for status, *_ in answers] == [200] * 20
        assert not any(hold.done() for hold in holds), "a hold answered before its work ran"
        assert connections <= 2, f"{connections} database connections held by waiting requests"
        # Now run the work: every hold answers with its completed poll.
        from .conftest import Worker

        worker = Worker(web.log_path.with_name("worker.log"), Path(web.log_path.parent))
        try:
            results = loop.run_until_complete(asyncio.gather(*holds))
        finally:
            worker.stop()
    finally:
        loop.close()
    assert {status for status, *_ in results} == {201}
    states = {json.loads(content)["state"] for _, content, _ in results}
    assert states == {"completed"}, states


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the production web process runs on a database server")
def test_held_per_key_cap_is_an_enveloped_429_before_any_work(start_web):
    web = start_web(RICLOUD_HELD_PER_KEY=3, RICLOUD_ASCHANNEL_HEARTBEAT_SECONDS=1)
    key = org_key("Capped")
    key_other = org_key("Uncapped")

    async def scenario():
        streams = [await RawStream.open(web.port, key.plaintext_token, key.stream) for _ in range(3)]
        refused = await RawStream.open(web.port, key.plaintext_token, key.stream)
        refused_body = await refused.reader.read()
        other = await RawStream.open(web.port, key_other.plaintext_token, key_other.stream)
        poll = await http(web.port, "POST", "/polls", key.plaintext_token,
                          b'{"session": "00000000-0000-0000-0000-000000000000", "payload": {}}', {"Ricloud-Await": "5"})
        for stream in streams + [other]:
            stream.close()
        return [s.status for s in streams], refused.status, refused_body, other.status, poll

    statuses, refused_status, refused_body, other_status, poll = asyncio.run(scenario())
    assert statuses == [200, 200, 200] and other_status == 200
    assert refused_status == 429
    envelope = json.loads(refused_body)
    assert envelope["success"] is False and envelope["errors"]["__all__"][0][1] == "too_many_held"
    status, content, head = poll
    assert status == 429 and "retry-after" in head
    assert json.loads(content)["error"] == "too-many-held"


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the production web process runs on a database server")
def test_many_streams_greeted_with_heartbeats(start_web):
    web = start_web(RICLOUD_ASCHANNEL_HEARTBEAT_SECONDS=1)
    key, short = org_key("Streams"), org_key("Short")

    async def scenario():
        streams = await asyncio.gather(*[RawStream.open(web.port, key.plaintext_token, key.stream)
                                         for _ in range(200)])
        greetings = await asyncio.gather(*[stream.next() for stream in streams])
        beats = await asyncio.gather(*[stream.next(timeout=5) for stream in streams])
        meanwhile = await http(web.port, "GET", "/organisation", short.plaintext_token)
        for stream in streams:
            stream.close()
        return streams, greetings, beats, meanwhile

    streams, greetings, beats, meanwhile = asyncio.run(scenario())
    assert {stream.status for stream in streams} == {200}
    assert all(header["type"] == "system" and json.loads(payload)["code"] == "streaming-started"
               for header, payload in greetings)
    assert beats == [("heartbeat", None)] * 200
    assert meanwhile[0] == 200


def _v2_results(web, key, count: int, **worker_env):
    """`count` finished v2 tasks of `key`, each with its result, and no delivery rows left (the
    test writes those itself, in the commit order it wants)."""
    from tasks_app.models import Result
    from tasks_app.services import accounts

    from .conftest import Worker

    accounts.register_account(key=key, source_type="icloud.account", username="late@example.com")
    api = LiveApi(web.url, key)
    form = {"service": "icloud", "action": "perform-2fa-challenge", "account": "late@example.com", "device": "0"}
    ids = [api.call("POST", "/submit-task/", data=form)["task_id"] for _ in range(count)]
    worker = Worker(web.log_path.with_name("worker.log"), Path(os.environ["RICLOUD_TEST_STORAGE"]), **worker_env)
    try:
        wait_for(lambda: Delivery.objects.filter(task_id__in=ids).count() == count)
    finally:
        worker.stop()
    Delivery.objects.filter(task_id__in=ids).delete()
    return [(Task.objects.get(id=task_id), Result.objects.get(task_id=task_id)) for task_id in ids]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the production web process runs on a database server")
def test_a_delivery_committed_late_is_not_skipped_by_a_connected_stream(start_web, storage_dir, monkeypatch):
    """Delivery A gets the lower id but commits after delivery B was sent: a cursor `id > last
    sent` would pass A over until the client reconnects. The connected stream must send it."""
    monkeypatch.setenv("RICLOUD_TEST_STORAGE", str(storage_dir))
    web = start_web(RICLOUD_ASCHANNEL_HEARTBEAT_SECONDS=1)
    key = org_key("Late")
    (task_a, result_a), (task_b, result_b) = _v2_results(web, key, 2)
    dsn = dict(host=connection.settings_dict["HOST"] or "127.0.0.1", port=connection.settings_dict["PORT"] or 5432,
               user=connection.settings_dict["USER"], dbname=connection.settings_dict["NAME"])
    table = Delivery._meta.db_table
    columns = "(organisation_id, task_id, result_id, stream, state, date_created)"
    slow, fast = psycopg2.connect(**dsn), psycopg2.connect(**dsn)

    def insert(conn, task, result):
        with conn.cursor() as cursor:
            cursor.execute(f"INSERT INTO {table} {columns} VALUES (%s, %s, %s, %s, 'pending', now()) RETURNING id",
                           [key.organisation_id, str(task.id), str(result.id), key.stream])
            return cursor.fetchone()[0]

    async def scenario():
        stream = await RawStream.open(web.port, key.plaintext_token, key.stream)
        assert (await stream.next())[0]["type"] == "system"
        id_a = insert(slow, task_a, result_a)      # A: lower id, transaction still open
        id_b = insert(fast, task_b, result_b)
        fast.commit()
        notify(stream_channel(key.stream))
        first = await next_message(stream)
        slow.commit()                              # A commits after B was sent
        notify(stream_channel(key.stream))
        second = await next_message(stream)
        stream.close()
        return id_a, id_b, first, second

    try:
        id_a, id_b, first, second = asyncio.run(scenario())
    finally:
        slow.close()
        fast.close()
    assert id_a < id_b
    assert first[0] and first[0]["task_id"] == str(task_b.id)
    assert second[0] and second[0]["task_id"] == str(task_a.id), "the late delivery was skipped"


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the production web process runs on a database server")
def test_a_stream_survives_a_redis_restart(start_web, storage_dir, monkeypatch):
    """Redis (our own instance) stops under a connected stream: heartbeats go on; it comes back:
    the process's subscription resumes by itself, and a new delivery is sent on its wake-up, not
    at the next heartbeat's re-scan."""
    from redis import Redis

    from tests.servers import RedisServer

    monkeypatch.setenv("RICLOUD_TEST_STORAGE", str(storage_dir))
    server = RedisServer().start()
    try:
        broker = {"CELERY_BROKER_URL": server.url, "REDIS_URL": server.url}
        web = start_web(RICLOUD_ASCHANNEL_HEARTBEAT_SECONDS=4, **broker)
        key = org_key("Restart")
        [(task, result)] = _v2_results(web, key, 1, **broker)

        def insert_delivery():
            try:
                Delivery.objects.create(organisation_id=key.organisation_id, stream=key.stream, task=task, result=result)
            finally:
                connection.close()

        async def scenario():
            stream = await RawStream.open(web.port, key.plaintext_token, key.stream)
            assert (await stream.next())[0]["type"] == "system"
            server.stop()
            beats = [await stream.next(timeout=8) for _ in range(2)]  # Redis down: still beating
            server.start()
            # The process's subscription comes back by itself (its backoff is at most 2 s).
            deadline = time.monotonic() + 10
            while web.log_path.read_text(errors="replace").count("hub: subscribed") < 2:
                assert time.monotonic() < deadline, "the web process did not resubscribe after the restart"
                await asyncio.sleep(0.1)
            await asyncio.to_thread(insert_delivery)
            Redis.from_url(server.url).publish(stream_channel(key.stream), "1")
            deadline = asyncio.get_running_loop().time() + 1.5  # a wake-up, not the heartbeat re-scan
            message = ("heartbeat", None)
            while message[0] == "heartbeat":
                message = await stream.next(timeout=max(0.01, deadline - asyncio.get_running_loop().time()))
            stream.close()
            return beats, message

        beats, message = asyncio.run(scenario())
        assert beats == [("heartbeat", None)] * 2
        assert message[0] != "heartbeat" and message[0]["task_id"] == str(task.id)
    finally:
        server.close()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the production web process runs on a database server")
def test_a_hold_whose_work_does_not_settle_answers_at_its_deadline(start_web):
    """No worker runs: the hold answers when the requested wait is over, with the state then."""
    web = start_web()
    api = LiveApi(web.url, org_key("Deadline"))
    user = api.call("POST", "/users", expect=201, json={"identifier": "deadline"})
    started = time.monotonic()
    session = api.call("POST", "/sessions", expect=201, headers={"Ricloud-Await": "1.5"}, json={
        "source": {"user": user["id"], "type": "mocks.mock", "identifier": "deadline"}, "payload": {}})
    waited = time.monotonic() - started
    assert session["state"] == "pending"
    assert 1.4 <= waited < 10, waited


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the production web process runs on a database server")
def test_a_stream_named_in_a_form_body_is_served_too(start_web):
    web = start_web()
    key = org_key("FormStream")
    response = requests.post(f"{web.url}/stream/", data={"stream": key.stream}, stream=True, timeout=10,
                             headers={"Authorization": f"Token {key.plaintext_token}"})
    try:
        assert response.status_code == 200
        length = int(response.raw.readline())
        assert json.loads(response.raw.read(length)[:-2]) == {"type": "system"}
    finally:
        response.close()
    wrong = requests.get(f"{web.url}/stream/", params={"stream": "stream-0"}, timeout=10,
                         headers={"Authorization": f"Token {key.plaintext_token}"})
    assert wrong.status_code == 403 and wrong.json()["success"] is False



def test_held_polls_answer_what_a_get_then_shows(start_web, worker):
    """A held POST /polls is answered from rows read for it (services/polls.py completed_poll), after
    a first check that is skipped when no notice came: the body is the poll as GET renders it, with
    its results, for polls of one and of several tasks, one after another as fast as they settle."""
    web = start_web()
    api = LiveApi(web.url, org_key("Held answers"))
    user = api.call("POST", "/users", expect=201, json={"identifier": "held-answers"})
    session = api.call("POST", "/sessions", expect=201, headers={"Ricloud-Await": "10"}, json={
        "source": {"user": user["id"], "type": "mocks.mock", "identifier": "held.answers@example.com"},
        "payload": {"password": "x"}})
    assert session["state"] == "active"
    channels = []
    for payload in ({"info_types": ["account.info"]}, {"info_types": ["*"]}, {"data_types": ["photos"]}) * 3:
        started = time.monotonic()
        held = api.call("POST", "/polls", expect=201, headers={"Ricloud-Await": "10"},
                        json={"session": session["id"], "payload": payload})
        assert held["state"] == "completed" and time.monotonic() - started < 8, held
        assert held["results"]["data"] and not held["tasks_pending"] and not held["tasks_processing"]
        assert unsigned(held) == unsigned(api.call("GET", f"/polls/{held['id']}", expect=200))
        channels.append(poll_channel(held["id"]))
    # The web processes subscribed to each poll's channel for its hold only (ricloud_server/hub.py).
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL.replace("redis+socket://", "unix://"))
    wait_for(lambda: not any(count for _, count in client.pubsub_numsub(*channels)), timeout=10)


def unsigned(poll: dict) -> dict:
    """The poll without its results' download URLs, whose expiry moves on with the clock."""
    results = [{k: v for k, v in result.items() if k != "signed_url"} for result in poll["results"]["data"]]
    return {**poll, "results": {**poll["results"], "data": results}}
