"""The README's curl examples, run top to bottom against the production web process and a real
worker, exactly as written: each `curl` line of a ```sh block that talks to `$B` is run by `sh`
with the real curl, `$B` and `$H` set to this server and a fresh organisation's token.

Placeholders (`<session id>`, `<poll id>`, `<file id>`, `<stream from submit-task>`, ...) are
filled with the ids of what the examples before them made, as a reader would: the last object of
that resource seen in a response (nested ones included, the top-level object last); `task_id`,
`account_id`, the first of `devices` and `stream` of a v2 response; for `<file id>` a file id read
from the data results of the walkthrough's polls. `https://example.com/webhooks` is replaced by
a local receiver, and the workers' S3 endpoint is a closed local port: nothing leaves this machine.

Each example must answer a 2xx, or the status its comment names (`# → 404 ...`). A stream
(`curl -N`) is read for two seconds: it must answer 200 and greet. When an example breaks,
the README is to be fixed (or the server), not this test.
"""
import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import Web
from tests.receiver import Receiver

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PLACEHOLDER = re.compile(r"<([a-z][a-z -]*)>")
WEBHOOK_URL = "https://example.com/webhooks"

# Run each example through this wrapper: the status on stdout, the body in $OUT, never more than
# 20 s (2 s for a stream, which never ends by itself).
CURL = """curl() {
  case " $* " in *" -N "*) limit=2 ;; *) limit=20 ;; esac
  command curl -sS -o "$OUT" -w '%{http_code}' --max-time "$limit" "$@"
}
"""


def examples(text: str) -> list[str]:
    """Every curl command of the ```sh blocks that uses $B, in order (continuation lines and
    quoted multi-line bodies joined)."""
    commands = []
    for block in re.findall(r"^```sh\n(.*?)^```", text, re.S | re.M):
        pending = ""
        for line in block.splitlines():
            pending = f"{pending}\n{line}" if pending else line
            if pending.endswith("\\"):
                continue
            try:
                shlex.split(pending, comments=True)
            except ValueError:  # an open quote: the command goes on
                continue
            if pending.lstrip().startswith("curl") and "$B" in pending:
                commands.append(pending)
            pending = ""
        assert not pending, f"unterminated example: {pending}"
    return commands


def expected_status(command: str) -> int | None:
    """The status the example's comment names (`# → 404 ...`), else None (any 2xx)."""
    found = re.search(r"#\s*→\s*(\d{3})\b", command)
    return int(found.group(1)) if found else None


class Walkthrough:
    def __init__(self, base_url: str, token: str, storage_dir: Path, receiver_url: str, tmp_path: Path):
        self.base_url, self.token, self.storage_dir = base_url, token, storage_dir
        self.receiver_url, self.out = receiver_url, tmp_path / "body"
        self.known: dict[str, str] = {}
        self.file_ids: list[str] = []
        self.log: list[str] = []

    # --- what the examples before have shown ---------------------------------------------------
    def learn(self, body) -> None:
        if isinstance(body, list):
            for item in body:
                self.learn(item)
            return
        if not isinstance(body, dict):
            return
        for value in body.values():
            if isinstance(value, dict | list):
                self.learn(value)
        resource, ident = body.get("resource"), body.get("id")
        if isinstance(resource, str) and resource != "list" and ident is not None:
            name = {"permissions": "permission"}.get(resource, resource).replace("_", " ")
            self.known[f"{name} id"] = str(ident)
        if "task_id" in body:  # v2 submit-task
            self.known["task id"] = str(body["task_id"])
        if "account_id" in body and not isinstance(body["account_id"], dict | list):  # v2 asmaster
            self.known["account id"] = str(body["account_id"])
        devices = body.get("devices")
        if isinstance(devices, list) and devices and isinstance(devices[0], dict) and "device_id" in devices[0]:
            self.known["device id"] = str(devices[0]["device_id"])  # (trusted_devices are indexes, not ids)
        if isinstance(body.get("stream"), str) and body["stream"].startswith("stream-"):
            self.known["stream from submit-task"] = body["stream"]
        if resource == "result" and isinstance(body.get("url"), str) and body["url"].startswith("local://"):
            self._read_file_ids(Path(body["url"].removeprefix("local://")))

    def _read_file_ids(self, path: Path) -> None:
        try:
            document = json.loads(path.read_bytes())
        except (OSError, ValueError):
            return  # a binary file, or not written here
        def walk(node):
            if isinstance(node, dict):
                for name, value in node.items():
                    if name == "files" and isinstance(value, list):
                        self.file_ids += [f["id"] for f in value if isinstance(f, dict) and "id" in f]
                    elif name == "file" and isinstance(value, dict) and "id" in value:
                        self.file_ids.append(value["id"])
                    elif name == "file_id" and isinstance(value, str):
                        self.file_ids.append(value)
                    else:
                        walk(value)
            elif isinstance(node, list):
                for item in node:
                    walk(item)
        walk(document)

    def fill(self, command: str) -> str:
        def value(match):
            name = match.group(1)
            if name == "file id":
                assert self.file_ids, "no data result named a file before this example:\n" + command
                return self.file_ids[0]
            assert name in self.known, f"nothing before this example showed a <{name}>:\n{command}"
            return self.known[name]

        return PLACEHOLDER.sub(value, command.replace(WEBHOOK_URL, self.receiver_url))

    # --- running one example -----------------------------------------------------------------
    def run(self, example: str) -> None:
        command = self.fill(example)
        self.out.unlink(missing_ok=True)
        env = {**os.environ, "B": self.base_url, "H": f"Authorization: Token {self.token}", "OUT": str(self.out)}
        done = subprocess.run(["sh", "-c", CURL + command], env=env, capture_output=True, text=True, timeout=60)
        status = int(done.stdout.strip() or 0)
        body = self.out.read_bytes() if self.out.exists() else b""
        self.log.append(f"{status} {command.splitlines()[0][:110]}")
        streaming = " -N " in f" {command} "
        expected = expected_status(example)
        context = f"{example}\n(run as: {command})\n→ {status} {body[:1500]!r}\ncurl: {done.stderr}"
        if streaming:  # ended by --max-time (exit 28) after its greeting
            assert status == 200 and done.returncode in (0, 28) and b'"system"' in body, context
            return
        assert done.returncode == 0, context
        assert status == expected if expected else 200 <= status < 300, context
        if body[:1] in (b"{", b"["):
            self.learn(json.loads(body))


def test_the_readme_curl_examples_run_top_to_bottom(e2e_key, storage_dir, start_worker, tmp_path):
    commands = examples(README.read_text())
    assert len(commands) >= 45, len(commands)
    receiver = Receiver()
    # The README's last example is the test-backend reset (served under `make run`).
    web = Web(tmp_path / "web.log", storage_dir, RICLOUD_WEBHOOK_ALLOW_PRIVATE=1, RICLOUD_RESET_ENABLED=1)
    try:
        start_worker(RICLOUD_WEBHOOK_ALLOW_PRIVATE=1, RICLOUD_S3_ENDPOINT_URL="http://127.0.0.1:9")
        walkthrough = Walkthrough(web.url, e2e_key.plaintext_token, storage_dir, receiver.url, tmp_path)
        for command in commands:
            walkthrough.run(command)
        print("\n".join(walkthrough.log))
    finally:
        web.stop()
        receiver.close()


def test_examples_are_extracted_whole():
    commands = examples(README.read_text())
    multi_line = [command for command in commands if "\n" in command]
    assert multi_line and all(shlex.split(command, comments=True)[0] == "curl" for command in commands)
    assert expected_status('curl $B/fetch/x/ -H "$H"   # → 404 task-result-not-found') == 404
    assert expected_status('curl $B/key -H "$H"   # the key of this request') is None


def test_the_readme_names_the_await_header_and_its_client_variable():
    text = README.read_text()
    assert "Ricloud-Await" in text and "RICLOUD_AWAIT_FOR" in text
