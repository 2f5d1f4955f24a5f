"""pytest plugin: test your code against a real ricloud-server (the package's `pytest11` entry point).

A module of its own, outside the `ricloud_server` package, because importing that package loads
Celery and Django and sets DJANGO_SETTINGS_MODULE: every pytest run of everyone who installs the
package loads this module, and it must leave their process as it found it.

    import ricloud

    def test_login(ricloud_server):
        ricloud_server.configure(ricloud, await_for=10)   # the official client, pointed at it
        user = ricloud.User.create(identifier="me@example.com")

`ricloud_server` (session scope) is a web process and a Celery worker started once per test session,
by default on the embedded default (SQLite and the bundled redis-server, `pip install
"ricloud-server[embedded]"`) in a temporary directory, with one organisation whose token the
fixture holds; they are stopped at the end of the session. Before every test that uses it after
the first, the server is reset (`POST /_ricloud/reset`), so tests do not see each other's data.

Options (or environment variables):
  --ricloud-url / RICLOUD_SERVER_URL, --ricloud-token / RICLOUD_SERVER_TOKEN
      use a server already running there (nothing is started); it is reset between tests too,
      if it allows it (RICLOUD_RESET_ENABLED), so do not point this at data you want to keep;
  --ricloud-database-url / RICLOUD_SERVER_DATABASE_URL, --ricloud-broker-url / RICLOUD_SERVER_BROKER_URL
      start the processes on this Postgres database and Redis (migrated, and wiped by the resets)
      instead of the embedded default;
  --ricloud-no-reset: never reset.

The plugin does nothing unless a test asks for `ricloud_server`: no process, no port, no import of
Django; the only other thing it adds to every test is a fixture that checks that name.
"""
import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import pytest

__all__ = ["RicloudServer"]

START_TIMEOUT_SECONDS = 120
STOP_GRACE_SECONDS = 20
RESET_PATH = "/_ricloud/reset"
# Settings of the caller's environment that must not reach the server's processes.
NOT_INHERITED = {
    "DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "SECRET_KEY", "ALLOWED_HOSTS", "PORT", "WEB_PORT",
    "WEB_CONCURRENCY", "WEB_THREADS", "WORKER_CONCURRENCY", "DJANGO_SETTINGS_MODULE", "DJANGO_DEBUG",
    "PYTHONSTARTUP", "PYTHONHOME",
}


def pytest_addoption(parser):
    group = parser.getgroup("ricloud-server", "ricloud-server (the ricloud_server fixture)")
    group.addoption("--ricloud-url", default=os.environ.get("RICLOUD_SERVER_URL"),
                    help="use the ricloud-server running at this URL instead of starting one (RICLOUD_SERVER_URL)")
    group.addoption("--ricloud-token", default=os.environ.get("RICLOUD_SERVER_TOKEN"),
                    help="a key's token on the server of --ricloud-url (RICLOUD_SERVER_TOKEN)")
    group.addoption("--ricloud-database-url", default=os.environ.get("RICLOUD_SERVER_DATABASE_URL"),
                    help="start the server on this database instead of SQLite; it is migrated and wiped "
                         "(RICLOUD_SERVER_DATABASE_URL)")
    group.addoption("--ricloud-broker-url", default=os.environ.get("RICLOUD_SERVER_BROKER_URL"),
                    help="start the server on this Redis instead of the embedded one (RICLOUD_SERVER_BROKER_URL)")
    group.addoption("--ricloud-no-reset", action="store_true", default=False,
                    help="do not reset the server between tests")


class RicloudServer:
    """A ricloud-server for a test session: `url`, `token` (of its organisation's key), `headers`,
    `client()` (the official client pointed at it), `reset()`; `stop()` ends what it started."""

    def __init__(self, url: str, token: str, *, resets: bool = True):
        self.url, self.token = url.rstrip("/"), token
        self.headers = {"Authorization": f"Token {token}"}
        self.resets = resets
        self.dirty = False  # a test has used it since the last reset
        self.processes: dict[str, subprocess.Popen] = {}
        self.directory: Path | None = None

    def __repr__(self):
        return f"<RicloudServer {self.url}>"

    # --- HTTP ---------------------------------------------------------------------------------

    def request(self, method: str, path: str, body=None, *, headers=None, timeout: float = 30):
        """`(status, decoded JSON or text)` of a request as the fixture's key (never raises on a status)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={**self.headers, "Content-Type": "application/json",
                                                  **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw or b"null")
        except ValueError:
            return status, raw.decode(errors="replace")

    def configure(self, ricloud, await_for: float | None = None):
        """Point the official `ricloud` client (3.x, the module the test imported) at this server
        and key; returns it. The plugin itself never imports the client: the test suite that uses
        it installs it (`pip install --no-deps ricloud==3.2.0`: it pins a click that Celery's
        excludes).

        `await_for` sets its `Ricloud-Await` (seconds a create or fetch may wait for the work to
        settle), so `Session.create(...)` answers once the session is active or failed."""
        ricloud.url, ricloud.token = self.url, self.token
        if await_for is not None:
            ricloud.resources.abase.ABResource.request_handler.await_for = str(await_for)
        return ricloud

    def reset(self) -> None:
        """Wipe what the tests made (`POST /_ricloud/reset`); the fixture's key keeps working. A
        server without the endpoint, or with it disabled, is warned about once and then left alone."""
        if not self.resets:
            return
        status, body = self.request("POST", RESET_PATH, headers={"Authorization": f"Bearer {self.token}"},
                                    timeout=60)
        if status in (403, 404, 405):
            self.resets = False
            warnings.warn(f"ricloud-server at {self.url} does not reset ({RESET_PATH} answered {status}: "
                          f"{body!r}); tests share its data", stacklevel=2)
            return
        if not 200 <= status < 300:
            raise RuntimeError(f"POST {RESET_PATH} answered {status}: {body!r}")
        self.dirty = False

    # --- processes (a started server only) -----------------------------------------------------

    @classmethod
    def start(cls, *, database_url: str | None = None, broker_url: str | None = None,
              resets: bool = True) -> "RicloudServer":
        directory = Path(tempfile.mkdtemp(prefix="ricloud-server-"))
        port, token = _free_port(), secrets.token_urlsafe(24)
        server = cls(f"http://127.0.0.1:{port}", token, resets=resets)
        server.directory = directory
        (directory / "logs").mkdir()
        env = _child_env(directory, database_url=database_url, broker_url=broker_url)
        try:
            if not broker_url:
                server._spawn("redis", ["-m", "ricloud_server.embedded_redis"], env)
                server._wait(lambda: _socket_answers(directory / "var" / "redis.sock"), "the embedded redis-server")
            # Migrates, then creates the organisation with that token (RICLOUD_DEMO_TOKEN), in one process.
            demo = subprocess.run([sys.executable, "-m", "ricloud_server.cli", "manage", "demo", "--migrate"],
                                  env={**env, "RICLOUD_DEMO_TOKEN": token}, capture_output=True, text=True,
                                  timeout=START_TIMEOUT_SECONDS)
            (directory / "logs" / "migrate.log").write_text(demo.stdout + demo.stderr)
            if demo.returncode != 0:
                raise RuntimeError(f"migrating the database failed:\n{demo.stdout}{demo.stderr}")
            server._spawn("web", ["-m", "ricloud_server.cli", "web", "--bind", f"127.0.0.1:{port}"],
                          {**env, "WEB_CONCURRENCY": "1"})
            server._spawn("worker", ["-m", "ricloud_server.cli", "worker"], {**env, "WORKER_CONCURRENCY": "2"})
            # /ready: the database, Redis and a worker answer.
            server._wait(lambda: server.request("GET", "/ready", timeout=5)[0] == 200, "GET /ready to answer 200")
        except BaseException:
            server.stop()
            raise
        return server

    def _spawn(self, name: str, args: list[str], env: dict) -> None:
        log = open(self.directory / "logs" / f"{name}.log", "ab")
        self.processes[name] = subprocess.Popen([sys.executable, *args], env=env, stdout=log, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, start_new_session=True,
                                                preexec_fn=_die_with_parent)
        log.close()

    def _wait(self, predicate, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"ricloud-server's {name} exited with code {process.returncode} "
                                       f"while waiting for {what}\n{self.logs()}")
            try:
                if predicate():
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"ricloud-server: timed out after {START_TIMEOUT_SECONDS}s waiting for {what}\n"
                                   f"{self.logs()}")
            time.sleep(0.2)

    def logs(self, lines: int = 30) -> str:
        """The last lines of each process's log."""
        if self.directory is None:
            return ""
        parts = []
        for path in sorted((self.directory / "logs").glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.stem}\n" + "\n".join(tail))
        return "\n".join(parts)

    def stop(self) -> None:
        """SIGTERM to web and worker (each process group), then to redis; SIGKILL after the grace."""
        order = [[p for name, p in self.processes.items() if name != "redis"], [self.processes.get("redis")]]
        for group in order:
            group = [process for process in group if process is not None]
            for process in group:
                _signal_group(process, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_SECONDS
            for process in group:
                try:
                    process.wait(timeout=max(deadline - time.monotonic(), 0.1))
                except subprocess.TimeoutExpired:
                    _signal_group(process, signal.SIGKILL)
                    process.wait()
                _signal_group(process, signal.SIGKILL)  # stragglers of the group (pool children)
        self.processes.clear()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


def _child_env(directory: Path, *, database_url: str | None, broker_url: str | None) -> dict:
    env = {name: value for name, value in os.environ.items()
           if name not in NOT_INHERITED and not name.startswith(("RICLOUD_", "CELERY_"))}
    package_root = str(Path(__file__).resolve().parent)  # importable from a checkout too
    env.update(
        DJANGO_SETTINGS_MODULE="ricloud_server.settings",
        PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
        PYTHONUNBUFFERED="1",
        RICLOUD_VAR_DIR=str(directory / "var"),
        SECRET_KEY=secrets.token_urlsafe(32),
        RICLOUD_ENCRYPTION_KEYS=base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        RICLOUD_RESET_ENABLED="1",
        # A test server: webhooks to the test's own receiver, no rate limits, plain logs.
        RICLOUD_WEBHOOK_ALLOW_PRIVATE="1",
        RICLOUD_RATE_LIMIT_ORGANISATION="",
        RICLOUD_RATE_LIMIT_KEY="",
        RICLOUD_RATE_LIMIT_FAILED_AUTH="",
        RICLOUD_LOG_FORMAT="text",
        LOG_LEVEL="WARNING",
    )
    if database_url:
        env["DATABASE_URL"] = database_url
    if broker_url:
        env["CELERY_BROKER_URL"] = env["REDIS_URL"] = broker_url
    return env


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _socket_answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def _die_with_parent() -> None:
    """Linux: the child gets SIGTERM if the test run is killed, instead of being left running."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


@pytest.fixture(scope="session")
def ricloud_server(request):
    """A ricloud-server for the test session (see the module's docstring): `.url`, `.token`,
    `.headers`, `.configure(ricloud, await_for=None)` (points the official client at it),
    `.request(method, path, body)`."""
    option = request.config.getoption
    if option("--ricloud-url"):
        if not option("--ricloud-token"):
            raise pytest.UsageError("--ricloud-url needs --ricloud-token (or RICLOUD_SERVER_TOKEN)")
        yield RicloudServer(option("--ricloud-url"), option("--ricloud-token"), resets=not option("--ricloud-no-reset"))
        return
    server = RicloudServer.start(database_url=option("--ricloud-database-url"),
                                 broker_url=option("--ricloud-broker-url"), resets=not option("--ricloud-no-reset"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _ricloud_server_reset(request):
    """Resets the server before a test that uses it, if an earlier test did; nothing otherwise."""
    if "ricloud_server" not in request.fixturenames:
        yield
        return
    server = request.getfixturevalue("ricloud_server")
    if not isinstance(server, RicloudServer):  # a fixture of the same name in the project's conftest
        yield
        return
    if server.dirty:
        server.reset()
    yield
    server.dirty = True
