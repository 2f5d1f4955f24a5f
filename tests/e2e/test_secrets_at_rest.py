"""No credential readable in clear anywhere the server keeps or sends things (issue "Secrets at
rest"): a full v3 and v2 flow with every kind of secret, run end to end by a real worker on
Postgres and Redis, then the whole database, the broker, the worker's and the server's logs, the
webhook deliveries, the published results and every API response are searched for each
plaintext secret used. The only place one may appear is the response that created it (the
webhook config's secret, the key's token), which the test leaves out of the search."""
import json
import logging
import os
import re
import secrets
import shutil
import subprocess

import boto3
import pytest
from django.conf import settings
from django.db import connection
from moto.server import ThreadedMotoServer

from tasks_app.choices import TASK_TERMINAL
from tasks_app.models import Session, Task, WebhookDelivery
from tests.servers import free_port
from workers.handlers.mockdata import VALID_2FA_CODE

from ..receiver import Receiver
from .conftest import LiveApi, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PRODUCT_LOGGERS = ("tasks_app", "workers", "asapi_app", "ricloud_server", "django", "celery")


@pytest.fixture
def s3():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{server._port}"
    # The harness's own client has credentials of its own: only the server's may be searched for.
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="harness",
                          aws_secret_access_key="harness")
    client.create_bucket(Bucket="secrets-bucket")
    client.endpoint = endpoint
    yield client
    server.stop()


@pytest.fixture
def receiver(settings):
    settings.RICLOUD_WEBHOOK_ALLOW_PRIVATE = True
    receiver = Receiver()
    yield receiver
    receiver.close()


class Recorder(LiveApi):
    """A LiveApi that keeps every response body (minus the ones that created a secret)."""

    def __init__(self, *args):
        super().__init__(*args)
        self.bodies = []

    def request(self, method, path, **kwargs):
        response = super().request(method, path, **kwargs)
        self.bodies.append(f"{method} {path} {response.status_code} {response.text}")
        return response

    def v2(self, path: str, **form) -> dict:
        return self.call("POST", path, data=form)


def test_no_plaintext_secret_anywhere(e2e_key, live_server, start_worker, receiver, s3, storage_dir, caplog):
    caplog.set_level(logging.INFO)
    for name in PRODUCT_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    worker = start_worker(RICLOUD_WEBHOOK_ALLOW_PRIVATE=1)
    api = Recorder(live_server.url, e2e_key)
    plain = {
        "v3 session password": f"pw3{secrets.token_hex(10)}",
        "v3 2FA session password": f"pw3fa{secrets.token_hex(10)}",
        "v2 log-in password": f"pw2{secrets.token_hex(10)}",
        "v2 2FA log-in password": f"pw2fa{secrets.token_hex(10)}",
        "storage access key id": f"AKIA{secrets.token_hex(8).upper()}",
        "storage secret access key": f"sk{secrets.token_urlsafe(24)}",
        "API token": e2e_key.plaintext_token,
        "encryption key": settings.RICLOUD_ENCRYPTION_KEYS[0],
    }

    # v3: a webhook config (signs every event from here on) and an S3 storage config with credentials.
    webhook = api.call("POST", "/configs/webhook", expect=201, json={"url": receiver.url},
                       headers={"Ricloud-Await": "10"})
    plain["webhook secret"] = webhook["secret"]
    api.bodies.pop()  # the create response shows the secret, once, by design
    wait_for(lambda: api.get(f"/configs/webhook/{webhook['id']}")["state"] == "valid")
    api.call("POST", "/organisation", json={"webhook_config_default": webhook["id"]})
    storage = api.call("POST", "/configs/storage", expect=201, json={
        "url": "s3://secrets-bucket/results",
        "credentials": {"access_key_id": plain["storage access key id"],
                        "secret_access_key": plain["storage secret access key"], "endpoint_url": s3.endpoint},
    }, headers={"Ricloud-Await": "10"})
    wait_for(lambda: api.get(f"/configs/storage/{storage['id']}")["state"] == "valid")

    # v3: sessions with a password, and with a password and a 2FA code; a poll publishing to S3.
    user = api.call("POST", "/users", expect=201, json={"identifier": "secrets@example.com"})
    sessions = [
        api.call("POST", "/sessions", expect=201, json={
            "source": {"user": user["id"], "type": "mocks.mock", "identifier": identifier}, "payload": payload})
        for identifier, payload in (
            ("secrets@example.com", {"password": plain["v3 session password"]}),
            ("2fa.secrets@example.com", {"password": plain["v3 2FA session password"], "code": VALID_2FA_CODE}),
        )
    ]
    for session in sessions:
        wait_for(lambda session=session: api.get(f"/sessions/{session['id']}")["state"] == "active")
    poll = api.call("POST", "/polls", expect=201, json={
        "session": sessions[0]["id"], "payload": {"info_types": ["account.info"], "data_types": ["messages.sms"]}})
    wait_for(lambda: api.get(f"/polls/{poll['id']}")["state"] == "completed")

    # v2: a log-in with a password, and a 2FA account's log-in, challenge and code.
    v2_tasks = []
    for account, password in (("v2.secrets@example.com", plain["v2 log-in password"]),
                              ("2fa.v2.secrets@example.com", plain["v2 2FA log-in password"])):
        api.v2("/register-account/", service="icloud", username=account)
        v2_tasks.append(api.v2("/submit-task/", service="icloud", action="log-in", account=account,
                               password=password)["task_id"])
    v2_tasks.append(api.v2("/submit-task/", service="icloud", action="perform-2fa-challenge",
                           account="2fa.v2.secrets@example.com")["task_id"])
    v2_tasks.append(api.v2("/submit-task/", service="icloud", action="submit-2fa-challenge",
                           account="2fa.v2.secrets@example.com", code=VALID_2FA_CODE)["task_id"])

    def all_ended():
        return not Task.objects.exclude(state__in=TASK_TERMINAL).exists()

    wait_for(all_ended, timeout=60)
    statuses = api.v2("/task-status/", task_ids=",".join(v2_tasks))
    assert {statuses[task_id]["status"] for task_id in v2_tasks} == {"Publish complete"}, statuses
    assert list(Task.objects.filter(id__in=v2_tasks).values_list("state", flat=True)) == ["succeeded"] * 4
    wait_for(lambda: not WebhookDelivery.objects.filter(state="pending").exists(), timeout=60)
    assert Session.objects.filter(credentials__isnull=False).count() == 0  # used, then dropped
    assert Task.objects.filter(secrets__isnull=False).count() == 0

    # Everything an API client can read.
    for path in ("/events", "/sessions", "/tasks", "/results", "/polls", "/configs/webhook", "/configs/storage",
                 "/organisation", "/key", "/keys", "/users", "/sources"):
        api.get(path, **({"limit": 1000} if path not in ("/organisation", "/key") else {}))
    for event in api.get("/events", limit=1000)["data"]:
        api.get(f"/events/{event['id']}/deliveries")
    api.v2("/task-status/", task_ids=",".join(v2_tasks))

    # Where to search.
    places = {
        "database (every table)": dump_tables(),
        "broker (every Redis key)": dump_redis(),
        "worker log": worker.log_path.read_text(errors="replace"),
        "server log": "\n".join(f"{r.name} {r.levelname} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records),
        "webhook deliveries": "\n".join(f"{r['path']} {r['headers']} {r['body'].decode(errors='replace')}"
                                        for r in receiver.requests),
        "published results": dump_s3(s3) + dump_dir(storage_dir),
        "API responses": "\n".join(api.bodies),
    }
    if connection.vendor == "postgresql" and shutil.which("pg_dump"):
        places["database (pg_dump)"] = pg_dump()
    assert len(receiver.requests) > 10 and "webhook_config" in places["webhook deliveries"]
    assert "sms" in places["published results"] and "Log-in successful" in places["published results"]

    hits = [(what, where, context(text, match.start()))
            for what, secret in plain.items() for where, text in places.items()
            for match in re.finditer(re.escape(secret), text)]
    # The 2FA code is a short number: count it where it stands alone (not inside a timestamp, a
    # UUID or a longer number).
    code = re.compile(rf"(?<![0-9A-Za-z.:+-]){VALID_2FA_CODE}(?![0-9A-Za-z])")
    hits += [("2FA code", where, context(text, match.start()))
             for where, text in places.items() for match in code.finditer(text)]
    assert not hits, "\n".join(f"{what} found in {where}: …{around}…" for what, where, around in hits)


def context(text: str, at: int) -> str:
    return text[max(0, at - 80):at + 80].replace("\n", " ")


def dump_tables() -> str:
    """Every row of every table, every column, as text."""
    lines = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            names = [column.name for column in cursor.description]
            for row in cursor.fetchall():
                lines.append(f"{table} " + json.dumps(dict(zip(names, row, strict=True)), default=str))
    assert any(line.startswith("tasks_app_session ") for line in lines)
    return "\n".join(lines)


def pg_dump() -> str:
    db = connection.settings_dict
    env = {"PGPASSWORD": db["PASSWORD"]} if db.get("PASSWORD") else {}
    done = subprocess.run(
        ["pg_dump", "--no-owner", "-h", db["HOST"] or "127.0.0.1", "-p", str(db["PORT"] or 5432),
         "-U", db["USER"] or "root", db["NAME"]],
        capture_output=True, text=True, env={**os.environ, **env}, check=True, timeout=120,
    )
    return done.stdout


def dump_redis() -> str:
    import redis

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL.replace("redis+socket://", "unix://"))
    read = {"string": client.get, "hash": client.hgetall, "set": client.smembers,
            "list": lambda name: client.lrange(name, 0, -1), "zset": lambda name: client.zrange(name, 0, -1)}
    lines = []
    for name in client.scan_iter(count=1000):
        reader = read.get(client.type(name).decode())
        lines.append(f"{name!r} {reader(name) if reader else b''!r}")
    return "\n".join(lines)


def dump_s3(client) -> str:
    objects = client.list_objects_v2(Bucket="secrets-bucket").get("Contents", [])
    return "\n".join(client.get_object(Bucket="secrets-bucket", Key=item["Key"])["Body"].read().decode(errors="replace")
                     for item in objects)


def dump_dir(path) -> str:
    return "\n".join(item.read_text(errors="replace") for item in path.rglob("*") if item.is_file())
