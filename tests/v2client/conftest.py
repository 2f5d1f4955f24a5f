"""The official v2 client, ricloud==2.3.10, unmodified, under Python 2.7: its environment and fixtures.

`py27_client` (session-scoped) yields a `Py27Client`:

- `.python`: a `Path` to the python2.7 of a virtualenv holding `ricloud==2.3.10` as PyPI ships it
  (and its own pinned dependencies, nothing else). The virtualenv is built once and cached across
  runs under `$RICLOUD_PY27_CACHE` (default `~/.cache/ricloud-server/py27/<key>`), the key being a
  hash of the requirement and of the interpreter's version, so a change of either builds a new one.
  Building takes ~15 s (pip from the machine's configured indexes); concurrent runs wait on a lock.
- `.write_config(directory, *, api_host, token, stream="", stream_host=None, asmaster_host=None,
  **sections)`: writes a `ricloud.ini` the client reads through `RICLOUD_CONF` (hosts, token, the
  aschannel stream name; `sections` adds or overrides e.g. `mysql={"host": ...}`) and returns its path.
- `.env(directory, conf)`: the environment to run the client in: `RICLOUD_CONF=conf`, `HOME=directory`
  (so no `~/.ricloud.ini` of the machine is read), unbuffered output, no proxies.
- `.run(args, cwd, env=None, timeout=300, input=None)`: runs `python2.7 *args` in `cwd` (the client
  writes `output/` and `logs/` under its working directory) and returns the `CompletedProcess`
  (text, stdout and stderr captured, never raises on the exit code; `TimeoutExpired` on a timeout).
  `args` are e.g. `["-m", "ricloud", "john.appleseed@reincubate.com", "--password=joshua"]` or a script.
- `.log(cwd)`: the text of the client's own log file (`cwd/logs/ricloud.log`), for assertion messages.

The interpreter is `$RICLOUD_PY27` if set, else `python2.7` on PATH, else pyenv's 2.7.x
(`$PYENV_ROOT/versions/2.7*/bin/python2.7`). Without one the tests skip locally but fail under CI
(`CI` set), so CI never passes by skipping them.

The server side comes from tests/e2e: `start_web` (the Procfile's web process), `start_worker`, `worker`,
`broker`, `storage_dir`, imported here so that tests in this directory can use them.
"""
from __future__ import annotations

import configparser
import fcntl
import glob
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import broker, start_web, start_worker, storage_dir, worker  # noqa: F401 (fixtures)

REQUIREMENT = "ricloud==2.3.10"
# virtualenv 20.21 is the last release that runs on, and creates, Python 2.7 environments.
VIRTUALENV = "virtualenv<20.22"
HERE = Path(__file__).resolve().parent
SCRIPTS = HERE / "py2"


def find_python27() -> str | None:
    candidates = [os.environ.get("RICLOUD_PY27"), shutil.which("python2.7")]
    pyenv_root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    candidates += sorted(glob.glob(os.path.join(pyenv_root, "versions", "2.7*", "bin", "python2.7")), reverse=True)
    for candidate in candidates:
        if not candidate or not os.access(candidate, os.X_OK):
            continue
        try:
            version = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                     capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
        if version == "2.7":
            return candidate
    return None


def _pip_env() -> dict:
    env = {name: value for name, value in os.environ.items() if not name.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", PYTHONWARNINGS="ignore")
    return env


def _check(command: list, what: str, timeout: float = 600, cwd=None) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=_pip_env(),
                            stdin=subprocess.DEVNULL, cwd=cwd)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({result.returncode}): {' '.join(map(str, command))}\n"
                           f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")


def build_environment(python27: str) -> Path:
    """The cached virtualenv with REQUIREMENT for this interpreter; built under a lock if absent."""
    version = subprocess.run([python27, "-c", "import sys; print(sys.version)"], capture_output=True, text=True,
                             timeout=30).stdout.strip()
    key = hashlib.sha256(f"{REQUIREMENT}\n{VIRTUALENV}\n{python27}\n{version}".encode()).hexdigest()[:16]
    root = Path(os.environ.get("RICLOUD_PY27_CACHE") or Path.home() / ".cache" / "ricloud-server" / "py27")
    root.mkdir(parents=True, exist_ok=True)
    target = root / key
    python = target / "bin" / "python"
    with open(root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".complete").exists():
            return python
        shutil.rmtree(target, ignore_errors=True)
        building = root / f"{key}.building"
        shutil.rmtree(building, ignore_errors=True)
        tools = building / "tools"
        _check([python27, "-m", "pip", "install", "--quiet", "--target", str(tools), VIRTUALENV], "installing virtualenv")
        env = _pip_env() | {"PYTHONPATH": str(tools)}
        result = subprocess.run([python27, "-m", "virtualenv", "--quiet", "--no-download", str(target)],
                                capture_output=True, text=True, timeout=600, env=env, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise RuntimeError(f"virtualenv failed:\n{result.stdout}\n{result.stderr}")
        _check([str(python), "-m", "pip", "install", "--quiet", REQUIREMENT], f"installing {REQUIREMENT}")
        _check([str(python), "-c", "import ricloud, ricloud.api, ricloud.stream, ricloud.object_store"],
               "importing the client", cwd=building)  # the client makes logs/ in its working directory
        shutil.rmtree(building, ignore_errors=True)
        (target / ".complete").write_text(REQUIREMENT + "\n")
    return python


class Py27Client:
    """See the module docstring."""

    def __init__(self, python: Path):
        self.python = python

    def write_config(self, directory: Path, *, api_host: str, token: str, stream: str = "",
                     stream_host: str | None = None, asmaster_host: str | None = None, **sections) -> Path:
        config = configparser.RawConfigParser()
        values = {
            "hosts": {"api_host": api_host, "stream_host": stream_host or api_host,
                      "asmaster_host": asmaster_host or api_host},
            "auth": {"token": token},
            "stream": {"stream_endpoint": stream},
            "logging": {"logs_directory": "logs", "time_profile": "False", "level": "DEBUG"},
        }
        for section, items in sections.items():
            values.setdefault(section, {}).update(items)
        for section, items in values.items():
            config[section] = {name: str(value) for name, value in items.items()}
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "ricloud.ini"
        with open(path, "w") as handle:
            config.write(handle)
        return path

    def env(self, directory: Path, conf: Path) -> dict:
        env = {name: value for name, value in os.environ.items()
               if not name.startswith(("PYTHON", "VIRTUAL_ENV", "DJANGO", "RICLOUD_"))
               and name.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
        env.update(RICLOUD_CONF=str(conf), HOME=str(directory), PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8",
                   NO_PROXY="*", no_proxy="*")
        return env

    def run(self, args, cwd: Path, env: dict | None = None, timeout: float = 300,
            input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.python), *map(str, args)], cwd=cwd, env=env, timeout=timeout,
                              input=input, capture_output=True, text=True,
                              stdin=None if input is not None else subprocess.DEVNULL)

    @staticmethod
    def log(cwd: Path) -> str:
        path = Path(cwd) / "logs" / "ricloud.log"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture(scope="session")
def py27_client() -> Py27Client:
    python27 = find_python27()
    if python27 is None:
        message = "Python 2.7 not found (RICLOUD_PY27, python2.7 on PATH, or pyenv's 2.7.x): the v2 client needs it"
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail(message)
        pytest.skip(message)
    return Py27Client(build_environment(python27))



# --- the server side: the Procfile's web process, a worker and a key of its own --------------------

class V2Service:
    """A live v2 server (`url`) and one key's token, discovered the way a customer would."""

    def __init__(self, url: str, key):
        import requests

        self.url, self.key, self.token = url, key, key.plaintext_token
        response = requests.get(f"{url}/account/", headers={"Authorization": f"Token {self.token}"}, timeout=30)
        response.raise_for_status()
        self.account = response.json()
        self.stream = self.account["stream"]  # discovery: GET /account/ names the stream (DECISIONS 71)

    def configure(self, client: Py27Client, directory: Path, **sections) -> dict:
        """A ricloud.ini for this server and key in `directory`; returns the environment to run in."""
        conf = client.write_config(directory, api_host=self.url, token=self.token, stream=self.stream, **sections)
        return client.env(directory, conf)


@pytest.fixture
def v2_service(start_web, worker, transactional_db):  # noqa: F811 (the imported fixtures)
    """`v2_service(retrieval_protocol="aschannel")` → a V2Service on the production web process
    (one per test) with a real worker, for a new organisation's key."""
    from tasks_app.services.organisations import create_organisation

    web = None

    def make(retrieval_protocol: str = "aschannel", **web_env) -> V2Service:
        nonlocal web
        if web is None:
            web = start_web(RICLOUD_ASCHANNEL_HEARTBEAT_SECONDS="1", **web_env)
        _, key = create_organisation(name=f"v2 client {retrieval_protocol}", retrieval_protocol=retrieval_protocol)
        return V2Service(web.url, key)

    return make
