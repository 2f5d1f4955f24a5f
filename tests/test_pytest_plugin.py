"""The pytest plugin's own edges, in a pytest run of its own (`-p ricloud_server_pytest`, as the
entry point loads it): options it refuses, and a server that cannot reset (an older server, or one
with RICLOUD_RESET_ENABLED off, answers the JSON 404 of an unknown path), which it warns about once
and then leaves alone. A real server under the plugin runs in tests/install/test_package.py."""
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

TESTS = '''
def test_one(ricloud_server):
    assert ricloud_server.request("GET", "/organisation")[0] == 200


def test_two(ricloud_server):
    assert ricloud_server.headers == {"Authorization": "Token t0ken-of-the-test"}


def test_without_the_fixture():
    pass
'''


class NoResetServer(BaseHTTPRequestHandler):
    """Answers /organisation to the right token, and 404 (as ricloud-server does for a path it does
    not serve) to everything else; counts the reset attempts."""

    resets: list = []

    def do_GET(self):
        ok = self.path == "/organisation" and self.headers.get("Authorization") == "Token t0ken-of-the-test"
        self.answer(200 if ok else 404)

    def do_POST(self):
        if self.path == "/_ricloud/reset":
            type(self).resets.append(self.headers.get("Authorization"))
        self.answer(404)

    def answer(self, status: int) -> None:
        body = json.dumps({"error": "not-found"} if status == 404 else {"id": 1}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def no_reset_server():
    NoResetServer.resets = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), NoResetServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def run_pytest(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_uses_it.py").write_text(TESTS)
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("DJANGO_", "RICLOUD_", "PYTEST_"))}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "ricloud_server_pytest", "-p", "no:cacheprovider",
                           "-p", "no:django", "-rw", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)


def test_a_server_without_the_reset_is_warned_about_once(tmp_path, no_reset_server):
    done = run_pytest(tmp_path, "--ricloud-url", no_reset_server, "--ricloud-token", "t0ken-of-the-test")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "3 passed" in output, output
    assert output.count("does not reset") == 1, output
    # Tried once (then left alone), with the key's token as Bearer.
    assert NoResetServer.resets == ["Bearer t0ken-of-the-test"]


def test_the_url_needs_a_token(tmp_path, no_reset_server):
    done = run_pytest(tmp_path, "--ricloud-url", no_reset_server, "-k", "test_one")
    assert done.returncode != 0
    assert "--ricloud-url needs --ricloud-token" in done.stdout + done.stderr


def test_no_reset_option_never_resets(tmp_path, no_reset_server):
    done = run_pytest(tmp_path, "--ricloud-url", no_reset_server, "--ricloud-token", "t0ken-of-the-test",
                      "--ricloud-no-reset")
    assert done.returncode == 0, done.stdout + done.stderr
    assert NoResetServer.resets == []
