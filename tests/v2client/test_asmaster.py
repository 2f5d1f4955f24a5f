"""asmaster through the official v2 client, ricloud==2.3.10 under Python 2.7, unmodified: every
manager-mode command, then listen mode storing the key's stream in a real MariaDB, against the
production web process and a real worker (whose subscription loop polls the devices; no beat).

Listen mode imports MySQLdb: MySQL-python 1.2.5 (what 2.3.10's README names) no longer builds
against MariaDB Connector/C 3 (`MYSQL` has no `reconnect`), so its maintained fork mysqlclient
1.4.6, the last release for Python 2.7 with the same `MySQLdb` module, is installed next to the
client's virtualenv (cached like it) and put on its PYTHONPATH. It builds against Debian's
libmariadb-dev (.ci/run installs it). MariaDB must listen on RICLOUD_TEST_MYSQL (default
127.0.0.1:3306, root, no password); the tests create a database of their own and drop it.
Without Python 2.7, a C compiler with the MariaDB headers or MariaDB, they skip locally and fail
under CI.
"""
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from asmaster_app.models import Account, Device
from tasks_app.choices import DeliveryState
from tasks_app.models import Delivery
from tasks_app.services.organisations import create_organisation
from workers.handlers import mockdata

from .conftest import _pip_env

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ACCOUNT, PASSWORD = "john.appleseed@reincubate.com", "joshua"
TWO_FA = "2fa.user@example.com"
MYSQLCLIENT = "mysqlclient==1.4.6"
FILES_PER_POLL = 3

# The listener's tables, as sql/create_schema.sql of github.com/reincubate/ricloud (2.x) defines them.
SCHEMA = """
CREATE TABLE `feed` (
  `id` int(11) unsigned NOT NULL AUTO_INCREMENT, `service` varchar(16) NOT NULL DEFAULT '',
  `received` datetime NOT NULL, `account_id` int(11) DEFAULT NULL, `device_id` int(11) DEFAULT NULL,
  `device_tag` varchar(100) DEFAULT NULL, `headers` json DEFAULT NULL, `body` json DEFAULT NULL,
  PRIMARY KEY (`id`), KEY `idx_account_id` (`account_id`), KEY `idx_device_id` (`device_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
CREATE TABLE `file` (
  `id` int(11) unsigned NOT NULL AUTO_INCREMENT, `service` varchar(16) NOT NULL DEFAULT '',
  `received` datetime NOT NULL, `account_id` int(11) DEFAULT NULL, `device_id` int(11) DEFAULT NULL,
  `device_tag` varchar(100) DEFAULT NULL, `headers` json DEFAULT NULL, `location` varchar(250) NOT NULL DEFAULT '',
  `file_id` varchar(4096) DEFAULT NULL,
  PRIMARY KEY (`id`), KEY `idx_account_id` (`account_id`), KEY `idx_device_id` (`device_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
CREATE TABLE `message` (
  `id` int(11) unsigned NOT NULL AUTO_INCREMENT, `service` varchar(16) NOT NULL DEFAULT '',
  `received` datetime NOT NULL, `account_id` int(11) DEFAULT NULL, `device_id` int(11) DEFAULT NULL,
  `device_tag` varchar(100) DEFAULT NULL, `headers` json DEFAULT NULL, `body` json DEFAULT NULL,
  PRIMARY KEY (`id`), KEY `idx_account_id` (`account_id`), KEY `idx_device_id` (`device_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
CREATE TABLE `system` (
  `id` int(11) unsigned NOT NULL AUTO_INCREMENT, `received` datetime NOT NULL, `headers` json DEFAULT NULL,
  `body` json DEFAULT NULL, `message` varchar(200) NOT NULL DEFAULT '', `code` varchar(200) DEFAULT NULL,
  PRIMARY KEY (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
"""


def _unavailable(message: str):
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


class MariaDB:
    """A database of this run in the MariaDB server, driven with the `mariadb`/`mysql` CLI."""

    def __init__(self, name: str):
        host, _, port = os.environ.get("RICLOUD_TEST_MYSQL", "127.0.0.1:3306").partition(":")
        self.host, self.port, self.name = host, int(port or 3306), name
        self.cli = next((path for path in ("/usr/bin/mariadb", "/usr/bin/mysql") if os.access(path, os.X_OK)), None)

    def sql(self, statement: str, database: str | None = None) -> str:
        command = [self.cli, "-h", self.host, "-P", str(self.port), "-u", "root", "--batch", "--raw",
                   "--skip-column-names", *([database] if database else []), "-e", statement]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"{statement[:200]}: {result.stderr}")
        return result.stdout

    def rows(self, query: str) -> list[dict]:
        """Each row as a JSON object (`query` selects one JSON_OBJECT column)."""
        return [json.loads(line) for line in self.sql(query, self.name).splitlines() if line.strip()]

    def count(self, table: str) -> int:
        return int(self.sql(f"SELECT COUNT(*) FROM `{table}`", self.name).strip())


@pytest.fixture
def mariadb():
    db = MariaDB(f"ricloud_asmaster_{os.getpid()}")
    if db.cli is None:
        _unavailable("the mariadb/mysql command line client is not installed")
    try:
        db.sql("SELECT 1")
    except (RuntimeError, OSError) as exc:
        _unavailable(f"MariaDB is not reachable at {db.host}:{db.port}: {exc}")
    db.sql(f"DROP DATABASE IF EXISTS `{db.name}`")
    db.sql(f"CREATE DATABASE `{db.name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    db.sql(SCHEMA, db.name)
    yield db
    db.sql(f"DROP DATABASE IF EXISTS `{db.name}`")


@pytest.fixture(scope="session")
def mysqldb_path(py27_client) -> Path:
    """A directory holding MySQLdb (mysqlclient 1.4.6) for the client's Python 2.7, cached."""
    root = py27_client.python.parent.parent.parent
    target = root / ("mysqldb-" + hashlib.sha256(f"{MYSQLCLIENT}\n{py27_client.python}".encode()).hexdigest()[:16])
    if not (target / ".complete").exists():
        building = target.with_suffix(".building")
        subprocess.run(["rm", "-rf", str(building)], check=True)
        result = subprocess.run([str(py27_client.python), "-m", "pip", "install", "--quiet", "--target", str(building),
                                 MYSQLCLIENT], capture_output=True, text=True, timeout=600, env=_pip_env(),
                                stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            _unavailable(f"{MYSQLCLIENT} does not build for Python 2.7 (needs gcc and libmariadb-dev):\n"
                         f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
        subprocess.run(["rm", "-rf", str(target)], check=True)
        building.rename(target)
        (target / ".complete").write_text(MYSQLCLIENT + "\n")
    return target


@pytest.fixture
def server(start_web, start_worker):
    web = start_web()
    start_worker(RICLOUD_ASMASTER_LOOP_SECONDS=1, RICLOUD_ASMASTER_FILES_PER_POLL=FILES_PER_POLL)
    return web


@pytest.fixture
def key(transactional_db):
    return create_organisation(name="Asmaster")[1]


class Manager:
    def __init__(self, py27_client, web, key, directory: Path):
        self.client, self.cwd = py27_client, directory
        conf = py27_client.write_config(directory, api_host=web.url, token=key.plaintext_token, stream=key.stream,
                                        asmaster_host=web.url)
        self.env = py27_client.env(directory, conf)

    def run(self, *args, expect_ok=True) -> dict:
        result = self.client.run(["-m", "ricloud", *map(str, args), "--timeout=120"], cwd=self.cwd, env=self.env,
                                 timeout=180)
        assert (result.returncode == 0) == expect_ok, (
            f"{args}: {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}\n"
            f"{self.client.log(self.cwd)[-3000:]}")
        return json.loads(result.stdout[result.stdout.index("{"):])


def test_manager_mode_every_command(py27_client, server, key, tmp_path):
    manager = Manager(py27_client, server, key, tmp_path)

    services = manager.run("--list-services")
    assert services["success"] is True and [s["name"] for s in services["services"]] == ["iCloud"]
    assert {"Fetch Data", "Download File"} <= {action["name"] for action in services["services"][0]["actions"]}
    assert services["stream_endpoints"][0]["uri"] == "/stream/" and services["stream"] == key.stream

    # A 2FA account: challenge a trusted device, a wrong code, then the code.
    answer = manager.run("--subscribe-account", TWO_FA, "secret", "iCloud")
    twofa = answer["account"]
    assert twofa["status"] == "2fa-required" and twofa["trusted_devices"] and twofa["devices"] == []
    assert manager.run("--perform-2fa-challenge", twofa["account_id"], 0)["message"].startswith("Challenge sent to ")
    refused = manager.run("--submit-2fa-challenge", twofa["account_id"], "000000", expect_ok=False)
    assert refused["errors"] == {"__all__": [[refused["error"], "code-invalid"]]}
    twofa = manager.run("--submit-2fa-challenge", twofa["account_id"], "123456")["account"]
    assert twofa["status"] == "active" and len(twofa["devices"]) >= 2

    # A locked account is refused, and listed as failed.
    locked = manager.run("--subscribe-account", "locked.user@example.com", "x", "iCloud", expect_ok=False)
    assert locked["errors"]["__all__"][0][1] == "source-locked" and "status failed" in locked["error"]

    account = manager.run("--subscribe-account", ACCOUNT, PASSWORD, "icloud")["account"]
    account_id = account["account_id"]
    assert account["status"] == "active" and len(account["devices"]) == 4
    devices = manager.run("--list-devices", account_id)["devices"]
    assert [d["device_id"] for d in devices] == [d["device_id"] for d in account["devices"]]
    first, second = devices[0]["device_id"], devices[1]["device_id"]

    subscribed = manager.run("--subscribe-device", account_id, first)["device"]
    assert subscribed["status"] == "subscribed" and subscribed["last_poll"] and subscribed["since"]
    assert manager.run("--subscribe-device", account_id, second)["device"]["status"] == "subscribed"
    assert manager.run("--unsubscribe-device", account_id, second)["device"]["status"] == "unsubscribed"

    reset = manager.run("--reset-subscription-since", account_id, "2024-03-01T00:00:00")["account"]
    assert reset["devices"][0]["since"] and reset["devices"][0]["status"] == "subscribed"
    bad = manager.run("--reset-subscription-since", account_id, "whenever", expect_ok=False)
    assert bad["errors"]["datetime"][0][1] == "invalid"

    listed = manager.run("--list-subscriptions", "iCloud")
    by_name = {a["username"]: a for a in listed["accounts"]}
    assert set(by_name) == {TWO_FA, ACCOUNT, "locked.user@example.com"}
    assert by_name["locked.user@example.com"]["status"] == "failed"
    assert [d["status"] for d in by_name[ACCOUNT]["devices"]] == ["subscribed", "unsubscribed", "available", "available"]

    gone = manager.run("--unsubscribe-account", twofa["account_id"])["account"]
    assert gone["status"] == "unsubscribed"
    again = manager.run("--resubscribe-account", twofa["account_id"], "secret")["account"]
    assert again["account_id"] == twofa["account_id"] and again["status"] == "2fa-required"
    assert manager.run("--resubscribe-account", account_id, PASSWORD)["account"]["status"] == "active"
    missing = manager.run("--list-devices", 99999, expect_ok=False)
    assert missing["errors"]["account_id"][0][1] == "no_such_account"


def decoded(value):
    """A JSON column's value, whether MariaDB's JSON_OBJECT embedded it or quoted it (the listener
    stores payloads as JSON strings of the payload's text: decode until it is not text)."""
    while isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return value


def wait_for(condition, timeout=120, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_listen_mode_stores_the_stream_in_mariadb(py27_client, mysqldb_path, mariadb, server, key, tmp_path):
    manager = Manager(py27_client, server, key, tmp_path / "manager")
    account = manager.run("--subscribe-account", ACCOUNT, PASSWORD, "iCloud")["account"]
    device = account["devices"][2]
    manager.run("--subscribe-device", account["account_id"], device["device_id"])

    listen_dir = tmp_path / "listen"
    conf = py27_client.write_config(listen_dir, api_host=server.url, token=key.plaintext_token, stream=key.stream,
                                    asmaster_host=server.url,
                                    mysql={"host": mariadb.host, "port": mariadb.port, "database": mariadb.name,
                                           "username": "root", "password": ""})
    env = py27_client.env(listen_dir, conf) | {"PYTHONPATH": str(mysqldb_path)}
    log = open(tmp_path / "listen.out", "w")
    listener = subprocess.Popen([str(py27_client.python), "-m", "ricloud", "--listen"], cwd=listen_dir, env=env,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        def context():
            return (f"{(tmp_path / 'listen.out').read_text()[-2000:]}\n{py27_client.log(listen_dir)[-4000:]}")

        try:
            wait_for(lambda: mariadb.count("feed") >= 1 and mariadb.count("file") >= FILES_PER_POLL
                     and mariadb.count("message") >= 2 and mariadb.count("system") >= 1, what="the listener's rows")
            # Everything the stream sent was consumed (results-consumed), nothing is left pending.
            wait_for(lambda: not Delivery.objects.filter(stream=key.stream, state=DeliveryState.PENDING).exists(),
                     what="every delivery consumed")
        except AssertionError:
            raise AssertionError(context()) from None

        ids = (account["account_id"], device["device_id"], device["device_tag"])
        assert Account.objects.get(id=ids[0]).username == ACCOUNT and Device.objects.get(id=ids[1]).account_id == ids[0]

        (system,) = mariadb.rows("SELECT JSON_OBJECT('message', message, 'code', code, 'headers', headers) FROM `system`")
        assert (system["message"], system["code"]) == ("Message streaming has begun.", "streaming-started")

        feeds = mariadb.rows("SELECT JSON_OBJECT('service', service, 'account_id', account_id, 'device_id', device_id,"
                             " 'device_tag', device_tag, 'headers', headers, 'body', body) FROM feed")
        # One poll so far. (A message the stream sent again after a reconnect, before the listener
        # reported it consumed, is stored again by the client: rows are compared by task.)
        polls = {decoded(f["headers"])["task_id"] for f in feeds}
        assert len(polls) == 1, [(decoded(f["headers"]), str(decoded(f["body"]))[:300]) for f in feeds]
        feed = feeds[0]
        assert (feed["service"], feed["account_id"], feed["device_id"], feed["device_tag"]) == ("iCloud", *ids)
        headers = decoded(feed["headers"])
        assert headers["type"] == "fetch-data" and headers["task_id"]
        document = decoded(feed["body"])
        expected = mockdata.data_document(ACCOUNT, "photos")["data"]
        assert [entry["id"] for entry in document["photos"]] == [entry["id"] for entry in expected]
        assert {"sms", "messages", "whatsapp_messages", "call_history", "contacts", "notes",
                "web_browser_history"} <= set(document)

        files = mariadb.rows("SELECT JSON_OBJECT('service', service, 'account_id', account_id, 'device_id', device_id,"
                             " 'device_tag', device_tag, 'location', location, 'file_id', file_id, 'headers', headers)"
                             " FROM file ORDER BY id")
        referenced = [entry["file_id"] for feed_entries in document.values() for entry in feed_entries
                      if isinstance(entry, dict) and entry.get("file_id")]
        assert sorted({row["file_id"] for row in files}) == sorted(list(dict.fromkeys(referenced))[:FILES_PER_POLL])
        for row in files:
            assert (row["service"], row["account_id"], row["device_id"], row["device_tag"]) == ("iCloud", *ids)
            assert decoded(row["headers"])["type"] == "download-file"
            content, _ = mockdata.file_content(ACCOUNT, row["file_id"])
            location = Path(row["location"])
            assert location.parts[-4:-1] == ("iCloud", str(ids[0]), str(ids[1])), location
            assert location.read_bytes() == content

        messages = mariadb.rows("SELECT JSON_OBJECT('account_id', account_id, 'device_id', device_id, 'body', body)"
                                " FROM message ORDER BY id")
        codes = list(dict.fromkeys(decoded(row["body"])["code"] for row in messages))
        assert codes[:2] == ["account-active", "device-subscribed"], codes
        assert all(row["account_id"] == ids[0] for row in messages)
        device_ids = {decoded(row["body"])["code"]: row["device_id"] for row in messages}
        assert device_ids["device-subscribed"] == ids[1] and device_ids["account-active"] is None

        # While it listens: a reset polls again, and the new feed arrives and is stored.
        manager.run("--reset-subscription-since", account["account_id"], "2024-06-01")
        try:
            wait_for(lambda: len({decoded(f["headers"])["task_id"] for f in mariadb.rows(
                "SELECT JSON_OBJECT('headers', headers) FROM feed")}) == 2, what="the second feed")
        except AssertionError:
            raise AssertionError(context()) from None
        assert "Traceback" not in py27_client.log(listen_dir)
    finally:
        os.killpg(listener.pid, 9)
        listener.wait(10)
        log.close()
