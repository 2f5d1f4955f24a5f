"""Real outages: the Procfile's web and worker run against a Postgres and a Redis of this test's
own, which it stops and starts again under them.

- Postgres down: every request that needs it answers 503 `service-unavailable` with Retry-After
  in its generation's envelope (never a 500, never HTML); Postgres back: the same processes
  answer 200 again from the first request, and tasks accepted before or after reach one
  terminal state.
- Redis down (no persistence: it comes back empty, every queued message lost): what only
  wakes or counts degrades (authentication is read from Postgres, rate limits are not applied,
  `Ricloud-Await` answers at once with the current state), task creation is still accepted (the
  rows are committed; the enqueue is left to the reaper), an open aschannel stream ends cleanly
  and `GET /stream/` is a 503. Redis back: the worker reconnects by itself, and every accepted
  task, including those whose message Redis lost, reaches exactly one terminal state.

The suite's shared Postgres and Redis are never touched (tests/servers.py).
"""
import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from tests.servers import PostgresServer, RedisServer, die_with_parent, free_port, postgres_binaries, redis_binary

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(postgres_binaries() is None or redis_binary() is None,
                       reason="needs the Postgres server binaries and redis-server"),
]

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "john.appleseed@reincubate.com"
# The settings of the processes under test: short recovery times, so the test is quick.
SETTINGS = {
    "RICLOUD_TASK_LEASE_SECONDS": "4",
    "RICLOUD_REAPER_INTERVAL_SECONDS": "1",
    "RICLOUD_PENDING_GRACE_SECONDS": "2",
    "RICLOUD_ASCHANNEL_HEARTBEAT_SECONDS": "1",
    "RICLOUD_RATE_LIMIT_ORGANISATION": "",
    "RICLOUD_WEBHOOK_ALLOW_PRIVATE": "1",
    "RICLOUD_WEBHOOK_FIRST_ATTEMPT_GRACE_SECONDS": "2",
    "WEB_CONCURRENCY": "2",
    "WEB_THREADS": "4",
    "WORKER_CONCURRENCY": "2",
}
# Variables of this environment that would point the processes elsewhere.
NOT_INHERITED = ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "PORT", "WEB_PORT", "DJANGO_SETTINGS_MODULE")


def wait_for(predicate, what: str, timeout: float = 30, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def procfile() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, colon, command = line.partition(":")
        if colon and name.strip() and not name.lstrip().startswith("#"):
            entries[name.strip()] = command.strip()
    return entries


class Process:
    """A Procfile line run by `sh` as honcho runs it, in its own process group."""

    def __init__(self, name: str, command: str, env: dict, log: Path):
        self.name, self.log = name, log
        self.log_file = open(log, "ab")
        self.popen = subprocess.Popen(["/bin/sh", "-c", "exec " + command], cwd=ROOT, env=env, stdout=self.log_file,
                                      stderr=subprocess.STDOUT, start_new_session=True,
                                      preexec_fn=die_with_parent(signal.SIGTERM))
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.popen.wait(10)
        self.log_file.close()

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class Stack:
    """Postgres, Redis, and the Procfile's web and worker on them."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.processes: dict[str, Process] = {}
        self.postgres = self.redis = None
        try:
            self._start(tmp)
        except BaseException:
            self.close()  # nothing started is left behind
            raise

    def _start(self, tmp: Path) -> None:
        self.postgres = PostgresServer()
        self.postgres.start()
        self.postgres.execute("CREATE DATABASE ricloud")
        (tmp / "redis").mkdir()
        self.redis = RedisServer(tmp / "redis")
        self.redis.start()
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        bin_dir = str(Path(sys.executable).parent)
        self.env = {
            **{name: value for name, value in os.environ.items() if name not in NOT_INHERITED},
            "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "/usr/bin:/bin")]),
            "PYTHONUNBUFFERED": "1",
            "DATABASE_URL": self.postgres.url("ricloud"),
            "CELERY_BROKER_URL": self.redis.url,
            "SECRET_KEY": secrets.token_hex(32),
            "RICLOUD_ENCRYPTION_KEYS": base64.urlsafe_b64encode(os.urandom(32)).decode(),
            "RICLOUD_VAR_DIR": str(tmp / "var"),
            "RICLOUD_STORAGE_URL": f"local://{tmp / 'results'}",
            "PORT": str(port),
            **SETTINGS,
        }
        manage = [sys.executable, "manage.py"]
        self._run([*manage, "migrate", "--noinput", "-v", "0"])
        token = self._run([*manage, "createorganisation", "Outages"]).strip().splitlines()[-1]
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Token {token}"
        self.stream_id = None
        for name in ("web", "worker"):
            command = procfile()[name]
            self.processes[name] = Process(name, command, self.env, tmp / f"{name}.log")
        wait_for(self._web_answers, "the web process to answer", timeout=60)
        wait_for(lambda: self._alive() and b" ready." in self.processes["worker"].log.read_bytes(),
                 "the worker to be ready", timeout=90)
        self.pids = {name: process.pid for name, process in self.processes.items()}

    def _run(self, args) -> str:
        done = subprocess.run(args, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def _alive(self) -> bool:
        for process in self.processes.values():
            assert process.alive(), f"{process.name} exited:\n{process.tail()}"
        return True

    def _web_answers(self) -> bool:
        self._alive()
        try:
            return requests.get(f"{self.base_url}/account/", timeout=5).status_code == 401
        except requests.ConnectionError:
            return False

    def same_processes(self) -> None:
        """Nothing was restarted: the processes started at the beginning still serve."""
        self._alive()
        assert {name: process.pid for name, process in self.processes.items()} == self.pids

    def logs(self) -> str:
        return "\n".join(f"--- {process.name}\n{process.tail()}" for process in self.processes.values())

    @contextmanager
    def diagnosed(self):
        """A failure comes with the tails of the web and worker logs."""
        try:
            yield
        except Exception as exc:
            raise AssertionError(f"{type(exc).__name__}: {exc}\n{self.logs()}") from exc

    # -- requests ------------------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        return self.http.request(method, self.base_url + path, **kwargs)

    def call(self, method: str, path: str, expect=(200, 201), **kwargs):
        response = self.request(method, path, **kwargs)
        assert response.status_code in expect, f"{method} {path} -> {response.status_code}: {response.text[:1000]}"
        return response.json()

    def v2(self, path: str, **form) -> dict:
        body = self.call("POST", path, expect=(200,), data=form)
        assert body.get("success") is True, body
        return body

    def v2_status(self, task_id: str) -> dict:
        return self.v2("/task-status/", task_ids=task_id)[task_id]

    def active_session(self, identifier: str) -> dict:
        user = self.call("POST", "/users", json={"identifier": identifier})
        session = self.call("POST", "/sessions", json={
            "source": {"user": user["id"], "type": "mocks.mock", "identifier": ACCOUNT},
            "payload": {"password": "pw"}}, headers={"Ricloud-Await": "10"})
        state = wait_for(lambda: self.call("GET", f"/sessions/{session['id']}")["state"] != "pending"
                         and self.call("GET", f"/sessions/{session['id']}")["state"], "the session to settle")
        assert state == "active"
        return session

    def poll(self, session: dict, **payload) -> dict:
        return self.call("POST", "/polls", expect=(201,),
                         json={"session": session["id"], "payload": {"data_types": ["messages.sms"], **payload}})

    def completed(self, poll: dict, timeout: float = 60) -> dict:
        body = wait_for(lambda: (lambda p: p if p["state"] == "completed" else None)(
            self.call("GET", f"/polls/{poll['id']}")), f"poll {poll['id']} to complete", timeout=timeout)
        assert not body["errors"], body["errors"]
        return body

    def succeeded_once(self, task_ids) -> None:
        """Every task succeeded, with exactly one `task.succeeded` event each."""
        for task_id in task_ids:
            assert self.call("GET", f"/tasks/{task_id}")["state"] == "succeeded", task_id
        events = self.call("GET", "/events", params={"type": "task", "action": "succeeded", "limit": 1000})
        counted = [event["data"]["id"] for event in events["data"]]
        assert {task_id: counted.count(task_id) for task_id in task_ids} == {task_id: 1 for task_id in task_ids}

    def published(self, task_id: str, timeout: float = 60) -> dict:
        def done():
            status = self.v2_status(task_id)
            assert "error" not in status, status
            return status if status["status"] == "Publish complete" else None

        return wait_for(done, f"v2 task {task_id} to be published", timeout=timeout)

    def open_stream(self) -> requests.Response:
        return self.request("GET", "/stream/", params={"stream": self.stream_id}, stream=True, timeout=(5, 15))

    def close(self) -> None:
        for process in self.processes.values():
            process.stop()
        for server in (self.postgres, self.redis):
            if server is not None:
                server.close()


@pytest.fixture(scope="module")
def stack():
    tmp = Path(tempfile.mkdtemp(prefix="ricloud-outages-"))
    stack = None
    try:
        stack = Stack(tmp)
        stack.v2("/register-account/", service="iCloud", username=ACCOUNT)
        stack.stream_id = stack.v2("/submit-task/", service="iCloud", action="log-in", account=ACCOUNT,
                                   password="joshua")["stream"]
        yield stack
    except Exception:
        if stack is not None:
            print(stack.logs())
        raise
    finally:
        if stack is not None:
            stack.close()
        subprocess.run(["rm", "-rf", str(tmp)], check=False)


def assert_unavailable(response: requests.Response, *, v2: bool) -> None:
    """A 503 with Retry-After in the envelope of the path's API generation."""
    what = f"{response.request.method} {response.request.path_url}"
    assert response.status_code == 503, f"{what} -> {response.status_code}: {response.text[:500]}"
    assert response.headers["Content-Type"].startswith("application/json"), (what, response.headers)
    assert int(response.headers["Retry-After"]) > 0, what
    body = response.json()
    if v2:
        assert body["success"] is False and body["errors"]["__all__"][0][1] == "service_unavailable", (what, body)
    else:
        assert body["error"] == "service-unavailable" and body["message"], (what, body)


def concurrently(calls):
    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda call: call(), calls))


def frames(data: bytes) -> list[dict]:
    """The headers of the aschannel frames in `data`, which must hold whole frames and heartbeats
    only (`<len>\\r\\n<header>\\r\\n<len>\\r\\n<payload>\\r\\n`, a bare CRLF is a heartbeat)."""
    headers, at = [], 0
    while at < len(data):
        if data.startswith(b"\r\n", at):
            at += 2
            continue
        size, _, rest = data[at:].partition(b"\r\n")
        assert size.isdigit(), f"not a frame at {at}: {data[at:at + 200]!r}"
        header = rest[:int(size)]
        assert header.endswith(b"\r\n"), f"a cut frame at {at}: {data[at:at + 200]!r}"
        headers.append(json.loads(header))
        rest = rest[int(size):]
        size, _, rest = rest.partition(b"\r\n")
        assert size.isdigit() and rest[int(size) - 2:int(size)] == b"\r\n", f"a cut payload at {at}"
        at = len(data) - len(rest) + int(size)
    return headers


class Stream:
    """An open aschannel stream, read as it arrives (each HTTP chunk is whole frames)."""

    def __init__(self, response: requests.Response):
        self.response = response
        self.chunks = response.iter_content(chunk_size=None)

    def until(self, marker: bytes, timeout: float = 20) -> bytes:
        seen, deadline = b"", time.monotonic() + timeout
        while marker not in seen:
            assert time.monotonic() < deadline, f"{marker!r} not on the stream: {seen[-500:]!r}"
            chunk = next(self.chunks, None)
            assert chunk is not None, f"the stream ended before {marker!r}: {seen[-500:]!r}"
            seen += chunk
        return seen

    def for_seconds(self, seconds: float) -> tuple[bytes, bool]:
        """What arrives within `seconds` (heartbeats keep coming), and whether the stream ended:
        a cut chunked body raises (requests' ChunkedEncodingError)."""
        data, deadline = b"", time.monotonic() + seconds
        for chunk in self.chunks:
            data += chunk
            if time.monotonic() > deadline:
                return data, False
        return data, True

    def close(self) -> None:
        self.response.close()


def test_postgres_down_then_back(stack):
    with stack.diagnosed():
        session = stack.active_session("pg@example.com")
        # Persistent connections on as many web threads as possible (a Postgres restart breaks them).
        assert all(response.status_code == 200
                   for response in concurrently([lambda: stack.request("GET", "/tasks")] * 16))
        in_flight = stack.poll(session, mock={"delay": 2})
        (in_flight_task,) = in_flight["tasks_pending"] + in_flight["tasks_processing"]
        task_status = {"task_ids": in_flight_task}

        stack.postgres.stop()
        try:
            needs_postgres = [
                (False, lambda: stack.request("GET", "/tasks")),
                (False, lambda: stack.request("GET", f"/sessions/{session['id']}")),
                (False, lambda: stack.request("POST", "/polls", json={"session": session["id"],
                                                                        "payload": {"data_types": ["messages.sms"]}})),
                (False, lambda: stack.request("POST", "/users", json={"identifier": "during@example.com"})),
                # A token never seen before: authenticating it needs Postgres.
                (False, lambda: requests.get(f"{stack.base_url}/tasks", timeout=30,
                                             headers={"Authorization": f"Token {secrets.token_hex(16)}"})),
                (True, lambda: stack.request("POST", "/task-status/", data=task_status)),
                (True, lambda: stack.request("POST", "/submit-task/", data={"service": "iCloud", "action": "log-in",
                                                                            "account": ACCOUNT, "password": "joshua"})),
                (True, lambda: stack.request("POST", "/register-account/", data={"service": "iCloud",
                                                                                 "username": "b@example.com"})),
                (True, lambda: stack.request("GET", "/stream/", params={"stream": stack.stream_id}, timeout=(5, 15))),
            ]
            for _ in range(2):  # the broken connections first, then connections refused
                for v2, call in needs_postgres:
                    assert_unavailable(call(), v2=v2)
            for response, (v2, _) in zip(concurrently([call for _, call in needs_postgres] * 2), needs_postgres * 2,
                                         strict=True):
                assert_unavailable(response, v2=v2)
        finally:
            stack.postgres.start()

        # The same processes serve again, from the first request of every thread.
        stack.same_processes()
        assert [response.status_code for response in concurrently([lambda: stack.request("GET", "/tasks")] * 16)] \
            == [200] * 16
        # What was running when Postgres went away ends once, and new work runs.
        stack.completed(in_flight)
        after = stack.completed(stack.poll(session))
        stack.succeeded_once([in_flight_task, *after["tasks_succeeded"]])
        login = stack.v2("/submit-task/", service="iCloud", action="log-in", account=ACCOUNT, password="joshua")
        stack.published(login["task_id"])
        stack.same_processes()


@pytest.fixture
def receiver():
    from tests.receiver import Receiver

    receiver = Receiver()
    yield receiver
    receiver.close()


def test_redis_down_then_back(stack, receiver):
    with stack.diagnosed():
        # Events have a webhook target: their delivery is enqueued after each commit, too.
        webhook = stack.call("POST", "/configs/webhook", json={"url": receiver.url}, headers={"Ricloud-Await": "10"})
        wait_for(lambda: stack.call("GET", f"/configs/webhook/{webhook['id']}")["state"] == "valid",
                 "the webhook config to be tested")
        stack.call("POST", "/organisation", json={"webhook_config_default": webhook["id"]})
        session = stack.active_session("redis@example.com")
        response = stack.open_stream()
        assert response.status_code == 200
        stream = Stream(response)
        stream.until(b"streaming-started")
        # Queued when Redis goes: with two worker processes busy on the slow tasks, the rest of the
        # poll's messages wait in Redis, and are lost with it.
        queued = stack.poll(session, data_types=["messages.sms", "whatsapp.messages", "photos", "call_history.calls",
                                                 "notes.notes"], mock={"delay": 3})
        wait_for(lambda: stack.call("GET", f"/polls/{queued['id']}")["tasks_processing"],
                 "a task of the poll to start")

        stack.redis.stop()
        try:
            # The open stream is never cut mid-frame nor turned into an error page: it ends cleanly
            # (a stream that waits on pub/sub cannot wait without Redis; the client reconnects) or,
            # on a server that polls Postgres while Redis is down, keeps its heartbeats.
            data, ended = stream.for_seconds(3 * float(SETTINGS["RICLOUD_ASCHANNEL_HEARTBEAT_SECONDS"]))
            frames(data)
            assert ended or b"\r\n" in data
            stream.close()
            # A new stream: a 503 in the v2 envelope, or a stream that works without Redis.
            response = stack.open_stream()
            if response.status_code == 503:
                assert_unavailable(response, v2=True)
            else:
                assert response.status_code == 200, response.text[:500]
                Stream(response).until(b"streaming-started")
            response.close()

            # Reads and writes that need only Postgres still work; nothing is rate-limited.
            assert stack.request("GET", "/tasks").status_code == 200
            accepted = stack.poll(session)
            started = time.monotonic()
            awaited = stack.call("POST", "/polls", expect=(201,), headers={"Ricloud-Await": "10"},
                                 json={"session": session["id"], "payload": {"info_types": ["*"]}})
            assert time.monotonic() - started < 13  # the wait stays bounded (10 s), Redis or not
            login = stack.v2("/submit-task/", service="iCloud", action="log-in", account=ACCOUNT, password="joshua")
            assert stack.v2_status(login["task_id"])["status"]
            time.sleep(2 * float(SETTINGS["RICLOUD_PENDING_GRACE_SECONDS"]))  # the reaper would re-send by now
        finally:
            stack.redis.start()  # empty: every queued message is gone

        stack.same_processes()
        for poll in (queued, accepted, awaited):
            body = stack.completed(poll, timeout=90)
            stack.succeeded_once(body["tasks_succeeded"])
        stack.published(login["task_id"])
        # The stream is back, and the v2 result accepted during the outage is on it.
        response = stack.open_stream()
        assert response.status_code == 200
        stream = Stream(response)
        stream.until(login["task_id"].encode())
        stream.close()
        # New work after the outage: the worker reconnected by itself. Events reach the webhook
        # target, those written during the outage too (their first message could not be sent).
        after = stack.completed(stack.poll(session))
        for poll in (accepted, after):
            wait_for(lambda poll=poll: any(poll["id"].encode() in request["body"] for request in receiver.requests),
                     f"the events of poll {poll['id']} to be delivered")
        stack.same_processes()
