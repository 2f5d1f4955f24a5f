"""End-to-end fixtures: a live HTTP server (pytest-django's threaded one, or the production web
process from the Procfile: `start_web`) and real Celery workers on Redis.

Workers are separate processes started against the test database; nothing is eager or mocked.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
import requests
import ricloud
from django.conf import settings
from django.db import connection

from tasks_app.services.organisations import create_organisation
from tests.servers import die_with_parent, free_port

ROOT = Path(__file__).resolve().parents[2]


def database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = quote(db["USER"] or "")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"])
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class Worker:
    """A `celery worker` process in its own process group (so it can be killed like a crash)."""

    def __init__(self, log_path: Path, storage_dir: Path, **env):
        self.log_path = log_path
        environment = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "RICLOUD_STORAGE_URL": f"local://{storage_dir}",
            "PYTHONUNBUFFERED": "1",
            **{name: str(value) for name, value in env.items()},
        }
        self.log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "ricloud_server", "worker", "--queues", "tasks,webhooks",
             "--concurrency", "2", "--without-gossip", "--without-mingle", "--loglevel", "INFO"],
            cwd=ROOT, env=environment, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while b" ready." not in log_path.read_bytes():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("celery worker did not start:\n" + log_path.read_text(errors="replace"))
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL the whole process group: the worker dies mid-task, as in a crash."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


def procfile_web() -> str:
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith("web:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError("the Procfile has no web line")


class Web:
    """The production web process: the Procfile's web command (one gunicorn worker process) in its own process group."""

    def __init__(self, log_path: Path, storage_dir: Path, **env):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environment = {
            **os.environ, "DATABASE_URL": database_url() + "?application_name=ricloud-web-test",
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "RICLOUD_STORAGE_URL": f"local://{storage_dir}", "PORT": str(self.port), "WEB_CONCURRENCY": "1",
            "DJANGO_DEBUG": "0", "ALLOWED_HOSTS": "*", "PYTHONUNBUFFERED": "1",
            "RICLOUD_RATE_LIMIT_ORGANISATION": "", "RICLOUD_RATE_LIMIT_KEY": "",
            **{name: str(value) for name, value in env.items()},
        }
        environment["PATH"] = f"{Path(os.sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}"
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.process = subprocess.Popen(["sh", "-c", procfile_web()], cwd=ROOT, env=environment, stdout=self.log,
                                        stderr=subprocess.STDOUT, start_new_session=True,
                                        preexec_fn=die_with_parent(signal.SIGTERM))
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"{self.url}/organisation", timeout=10)
                break
            except requests.RequestException:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()  # never leave a half-started server behind
                    raise RuntimeError("the web process did not start:\n" + log_path.read_text(errors="replace")) from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.log.close()


@pytest.fixture
def start_web(broker, storage_dir, tmp_path):
    started = []

    def start(**env) -> Web:
        web = Web(tmp_path / f"web-{len(started)}.log", storage_dir, **env)
        started.append(web)
        return web

    yield start
    for web in started:
        web.stop()


@pytest.fixture(scope="session")
def broker(django_db_setup, django_db_blocker):
    """A clean broker database for this run."""
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL.replace("redis+socket://", "unix://"))
    client.flushdb()
    yield client
    # Worker connections may outlive their processes by a moment; let the test database go.
    if connection.vendor == "postgresql":
        with django_db_blocker.unblock():
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )


@pytest.fixture(scope="session")
def storage_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("results")


@pytest.fixture
def start_worker(broker, storage_dir, tmp_path):
    workers = []

    def start(**env) -> Worker:
        worker = Worker(tmp_path / f"worker-{len(workers)}.log", storage_dir, **env)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def worker(start_worker):
    return start_worker()


@pytest.fixture
def e2e_key(transactional_db):
    return create_organisation(name="E2E")[1]


@pytest.fixture
def ricloud_client(live_server, e2e_key, monkeypatch, tmp_path):
    """The official ricloud-py 3.2.0 client, configured for the live server and a fresh organisation."""
    monkeypatch.setattr(ricloud, "url", live_server.url)
    monkeypatch.setattr(ricloud, "token", e2e_key.plaintext_token)
    monkeypatch.setenv("RICLOUD_OUTPUT_DIRECTORY", str(tmp_path / "output"))
    return ricloud


def wait_for(predicate, timeout: float = 30, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


class LiveApi:
    """Plain HTTP to the live server as one key: JSON bodies (v3) or form bodies (v2, `data=`).

    `request` never raises on a status; `call` asserts the expected one and returns the body."""

    def __init__(self, base_url: str, key):
        self.base_url, self.key = base_url, key
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Token {key.plaintext_token}"

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        return self.http.request(method, f"{self.base_url}{path}", timeout=60, **kwargs)

    def call(self, method: str, path: str, expect: int = 200, **kwargs):
        response = self.request(method, path, **kwargs)
        assert response.status_code == expect, (method, path, response.status_code, response.text[:2000])
        return response.json()

    def get(self, path: str, **params):
        return self.call("GET", path, params=params)

    def open_session(self, identifier: str = "john.appleseed@reincubate.com", *, wait: bool = True) -> dict:
        """A user (POST /users, get-or-create) and a mocks.mock session on `identifier`; with `wait`,
        once the session is active (needs a running worker)."""
        response = self.request("POST", "/users", json={"identifier": identifier})
        assert response.status_code in (200, 201), response.text
        session = self.call("POST", "/sessions", expect=201, json={
            "source": {"user": response.json()["id"], "type": "mocks.mock", "identifier": identifier},
            "payload": {"password": "pw"},
        })
        if wait:
            wait_for(lambda: self.get(f"/sessions/{session['id']}")["state"] != "pending")
            session = self.get(f"/sessions/{session['id']}")
            assert session["state"] == "active", session
        return session


@pytest.fixture
def live_api(live_server):
    """`live_api(key)`: a LiveApi for that key against pytest-django's live server."""
    return lambda key: LiveApi(live_server.url, key)
