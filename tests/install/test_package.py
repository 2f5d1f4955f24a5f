"""The package, installed as a user installs it, outside the checkout.

A venv is built in a temporary directory (pip's cache makes it ~20 s) with `pip install
"<copy of the checkout>[embedded]"` and pytest, plus the official client `ricloud==3.2.0
--no-deps` (its click<8 pin conflicts with Celery's). From there, in a directory of its own:
the `ricloud-server` console script answers, and pytest runs the README's example
(tests/examples/ricloud_client_example.py, run as test_with_ricloud_server.py) through the package's pytest plugin, on the embedded
default and on this suite's Postgres and Redis; a test that does not ask for the fixture starts
nothing. The checkout is copied first so that the build's `build/` and `*.egg-info` land in the
copy, not in the working tree.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

import ricloud_server
from tests.servers import free_port

from .test_runtime_requirements import Database, RedisDb, run, runtime_env, wait_for

pytestmark = pytest.mark.install

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["ricloud_server", "tasks_app", "asapi_app", "asmaster_app", "workers"]
BUILD_FILES = ["pyproject.toml", "README.md", "LICENSE", "requirements-runtime.txt", "requirements-embedded.txt",
               "ricloud_server_pytest.py"]
EXAMPLE = ROOT / "tests" / "examples" / "ricloud_client_example.py"
EXAMPLE_AS = "test_with_ricloud_server.py"  # a name pytest collects, in the package venv's directory

INERT_TEST = '''
import os
import sys


def test_nothing_started_unless_asked():
    assert "django" not in sys.modules
    children = []
    for stat in os.listdir("/proc"):
        if stat.isdigit():
            try:
                fields = open(f"/proc/{stat}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == os.getpid():
                children.append(stat)
    assert children == []
'''


def dev_pin(name: str) -> str:
    """The version requirements-dev.txt pins for `name` (the same pytest as the suite's)."""
    for line in (ROOT / "requirements-dev.txt").read_text().splitlines():
        if re.match(rf"{re.escape(name)}==", line.strip(), re.I):
            return line.strip()
    raise AssertionError(f"{name} is not pinned in requirements-dev.txt")


class PackageVenv:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.dir, self.work, self.logs = tmp / "venv", tmp / "work", tmp / "logs"
        self.python = self.dir / "bin" / "python"
        self.work.mkdir()
        self.logs.mkdir()
        self.env = runtime_env(self.dir)

    def build(self) -> None:
        source = self.tmp / "source"
        source.mkdir()
        for name in BUILD_FILES:
            shutil.copy2(ROOT / name, source / name)
        for package in PACKAGES:
            shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        log = self.logs / "pip.log"
        run([sys.executable, "-m", "venv", self.dir], env=self.env, log=log, what="python -m venv", timeout=300)
        run([self.python, "-m", "pip", "install", "--progress-bar", "off", f"{source}[embedded]", dev_pin("pytest")],
            env=self.env, log=log, what="pip install <checkout>[embedded] pytest", timeout=900)
        run([self.python, "-m", "pip", "install", "--progress-bar", "off", "--no-deps", "ricloud==3.2.0"],
            env=self.env, log=log, what="pip install --no-deps ricloud==3.2.0", timeout=300)

    def run(self, *args) -> str:
        """A command in the venv's work directory (not the checkout, whose packages would shadow the
        installed ones): its stdout; fails with its output if it failed."""
        done = subprocess.run([str(arg) for arg in args], cwd=self.work, env=self.env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, f"{args} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
        return done.stdout

    def pytest(self, *args, env: dict | None = None) -> str:
        """pytest of the venv in its work directory: its output; fails with it if the run failed."""
        done = subprocess.run([str(self.python), "-m", "pytest", "-p", "no:cacheprovider", "-v", *map(str, args)],
                              cwd=self.work, env={**self.env, **(env or {})}, capture_output=True, text=True,
                              timeout=600)
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"pytest {' '.join(map(str, args))} failed ({done.returncode}):\n{output[-6000:]}"
        return output


@pytest.fixture(scope="module")
def package_venv():
    tmp = Path(tempfile.mkdtemp(prefix="ricloud-package-"))
    try:
        venv = PackageVenv(tmp)
        venv.build()
        yield venv
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_the_console_script_runs_from_the_installed_package(package_venv):
    assert package_venv.run(package_venv.dir / "bin" / "ricloud-server", "version").strip() == ricloud_server.__version__
    where = package_venv.run(package_venv.python, "-c", "import asapi_app; print(asapi_app.__file__)")
    installed = Path(where.strip()).parent
    assert installed.is_relative_to(package_venv.dir), f"imported from {installed}, not from the installed package"
    assert (installed / "openapi.yaml").is_file(), "asapi_app/openapi.yaml is not installed with the package"
    # Every file the packages read at run time is installed with them (templates, schemas).
    site = installed.parent
    data = [path.relative_to(ROOT) for package in PACKAGES for path in (ROOT / package).rglob("*")
            if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts]
    assert data and [str(path) for path in data if not (site / path).is_file()] == []
    # Django's checks and the v2 schema file from the installed package (no checkout, no manage.py).
    package_venv.run(package_venv.dir / "bin" / "ricloud-server", "manage", "check")
    usage = package_venv.run(package_venv.dir / "bin" / "ricloud-server", "--help")
    assert all(command in usage for command in ("run", "web", "worker", "beat", "migrate", "manage")), usage


def test_the_readme_example_passes_on_the_embedded_default(package_venv):
    shutil.copy2(EXAMPLE, package_venv.work / EXAMPLE_AS)
    output = package_venv.pytest(EXAMPLE_AS)
    assert re.search(r"\b2 passed\b", output), output[-3000:]
    assert "does not reset" not in output, output[-3000:]


def test_the_example_passes_on_given_postgres_and_redis(package_venv, tmp_path):
    shutil.copy2(EXAMPLE, package_venv.work / EXAMPLE_AS)
    database, redis_db = Database(tmp_path), RedisDb()
    try:
        output = package_venv.pytest(EXAMPLE_AS, "--ricloud-database-url", database.url,
                                     "--ricloud-broker-url", redis_db.url)
        assert re.search(r"\b2 passed\b", output), output[-3000:]
    finally:
        database.drop()
        redis_db.release()


def test_the_plugin_is_registered_and_inert(package_venv):
    (package_venv.work / "test_inert.py").write_text(INERT_TEST)
    output = package_venv.pytest("test_inert.py", "--fixtures")
    assert "ricloud_server [session scope]" in output, output[-3000:]
    output = package_venv.pytest("test_inert.py")
    assert re.search(r"\b1 passed\b", output), output[-3000:]


def test_ricloud_server_run_serves_the_embedded_default_and_stops_everything(package_venv):
    port = free_port()
    log = package_venv.logs / "run.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([package_venv.dir / "bin" / "ricloud-server", "run"], cwd=package_venv.work,
                                   env={**package_venv.env, "PORT": str(port)}, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        def ready():
            assert process.poll() is None, f"ricloud-server run exited ({process.returncode}):\n{log.read_text()}"
            try:
                return requests.get(f"http://127.0.0.1:{port}/ready", timeout=5).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(ready, what="ricloud-server run to be ready", timeout=120)
        token = (package_venv.work / "var" / "demo-token").read_text().strip()  # ./var of the working directory
        assert f"Authorization: Token {token}" in log.read_text()
        answer = requests.get(f"http://127.0.0.1:{port}/organisation", headers={"Authorization": f"Token {token}"},
                              timeout=10)
        assert answer.status_code == 200 and answer.json()["name"] == "Demo", answer.text
        # The plugin on a running server (--ricloud-url): nothing started, the server reset between tests.
        shutil.copy2(EXAMPLE, package_venv.work / EXAMPLE_AS)
        output = package_venv.pytest(EXAMPLE_AS, "--ricloud-url", f"http://127.0.0.1:{port}", "--ricloud-token", token)
        assert re.search(r"\b2 passed\b", output) and "does not reset" not in output, output[-3000:]
        children = process_group(process.pid)
        assert len(children) >= 4, children  # the command, redis, web, worker, beat and their pools
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log.read_text()[-3000:]
        deadline = time.monotonic() + 10
        while process_group(process.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert process_group(process.pid) == [], f"left running: {process_group(process.pid)}"
    finally:
        if process.poll() is None or process_group(process.pid):
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.wait()


def process_group(pgid: int) -> list[str]:
    """The command lines of the live processes of a process group (Linux /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.append(Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip())
        except (OSError, IndexError, ValueError):
            continue
    return found
