"""GET /metrics access, the request id and the JSON log line, in process (docs/DECISIONS.md 100-109)."""
import json
import logging
import os
import time

import pytest
from django.test import override_settings

from ricloud_server.requestlog import JsonFormatter, RequestIdFilter, request_id_var

pytestmark = pytest.mark.django_db

TOKEN = "metrics-token-0123456789"


def scrape(client, address="127.0.0.1", **headers):
    return client.get("/metrics", REMOTE_ADDR=address, **headers)


def test_it_serves_the_prometheus_text_format_to_loopback_and_private_addresses_by_default(client):
    client.get("/tasks")  # a 401 counted under its route
    for address in ("127.0.0.1", "10.1.2.3", "192.168.0.9", "::1"):
        response = scrape(client, address)
        assert response.status_code == 200, address
        assert response["Content-Type"].startswith("text/plain; version=")
    text = response.content.decode()
    assert 'ricloud_http_requests_total{method="GET",route="/tasks",status="401"}' in text
    assert "ricloud_http_request_duration_seconds_bucket" in text
    assert 'ricloud_scrape_source_up{source="database"} 1.0' in text
    assert 'ricloud_queue_depth{queue="tasks"}' in text


def test_it_refuses_public_addresses_without_a_token(client):
    response = scrape(client, "8.8.8.8")
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden" and response.json()["message"]
    assert "ricloud_" not in response.content.decode()


@override_settings(RICLOUD_METRICS_TOKEN=TOKEN)
def test_with_a_token_it_wants_the_bearer_token_from_any_address(client):
    for headers in ({}, {"HTTP_AUTHORIZATION": "Bearer wrong"}, {"HTTP_AUTHORIZATION": f"Token {TOKEN}"}):
        response = scrape(client, "8.8.8.8", **headers)
        assert response.status_code == 401, headers
        assert response.json()["error"] == "unauthorized"
        assert response["WWW-Authenticate"].startswith("Bearer")
    assert scrape(client, "8.8.8.8", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200
    assert scrape(client, "127.0.0.1").status_code == 401  # the token is wanted from loopback too


@override_settings(RICLOUD_METRICS_TOKEN=TOKEN, RICLOUD_METRICS_ALLOW="203.0.113.0/24")
def test_token_and_allow_list_both_apply(client):
    assert scrape(client, "203.0.113.7", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200
    assert scrape(client, "127.0.0.1", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 403
    assert scrape(client, "203.0.113.7").status_code == 401


@override_settings(RICLOUD_METRICS_ALLOW="0.0.0.0/0,::/0")
def test_an_allow_list_can_open_it(client):
    assert scrape(client, "8.8.8.8").status_code == 200


@override_settings(RICLOUD_METRICS_ALLOW="not-a-network")
def test_a_bad_allow_list_refuses_rather_than_fails(client):
    response = scrape(client, "127.0.0.1")
    assert response.status_code == 403 and response.json()["error"] == "forbidden"


def test_a_request_relayed_by_an_untrusted_proxy_is_refused_without_a_token(client):
    for header in ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP"):
        assert scrape(client, "10.0.0.2", **{header: "10.0.0.9"}).status_code == 403, header
    with override_settings(RICLOUD_METRICS_TOKEN=TOKEN):
        assert scrape(client, "10.0.0.2", HTTP_X_FORWARDED_FOR="8.8.8.8",
                      HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200


@override_settings(RICLOUD_TRUSTED_PROXIES="127.0.0.1")
def test_behind_a_trusted_proxy_the_forwarded_client_is_checked(client):
    assert scrape(client, "127.0.0.1", HTTP_X_FORWARDED_FOR="8.8.8.8").status_code == 403
    assert scrape(client, "127.0.0.1", HTTP_X_FORWARDED_FOR="10.0.0.5").status_code == 200


def test_other_methods_are_a_405_and_head_has_no_body(client):
    assert client.post("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 405
    response = client.head("/metrics", REMOTE_ADDR="127.0.0.1")
    assert response.status_code == 200 and response.content == b""


def test_every_response_carries_a_request_id(client):
    generated = client.get("/health")["X-Request-Id"]
    assert len(generated) == 32 and int(generated, 16) >= 0
    assert client.get("/nowhere")["X-Request-Id"] != generated
    assert client.get("/tasks", HTTP_X_REQUEST_ID="abc-123_x.y:z")["X-Request-Id"] == "abc-123_x.y:z"
    for insane in ("has space", "x" * 129, "semi;colon", "é"):
        replaced = client.get("/health", HTTP_X_REQUEST_ID=insane)["X-Request-Id"]
        assert replaced != insane and len(replaced) == 32


def test_the_request_line_is_logged_with_route_status_ids_and_no_token(client, caplog, e2e_key_plain):
    key, token = e2e_key_plain
    with caplog.at_level(logging.INFO, logger="ricloud.request"):
        response = client.get("/tasks/0190a4e8-0000-7000-8000-000000000000", HTTP_AUTHORIZATION=f"Token {token}",
                              HTTP_X_REQUEST_ID="req-1")
    assert response.status_code == 404
    (record,) = [r for r in caplog.records if r.name == "ricloud.request"]
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert entry["message"].startswith("GET /tasks/{pk} 404 ") and entry["message"].endswith("ms")
    assert {k: entry[k] for k in ("level", "logger", "method", "route", "status", "request_id", "key_id",
                                  "organisation_id")} == {
        "level": "INFO", "logger": "ricloud.request", "method": "GET", "route": "/tasks/{pk}", "status": 404,
        "request_id": "req-1", "key_id": key.id, "organisation_id": key.organisation_id}
    assert isinstance(entry["duration_ms"], float) and entry["time"].endswith("Z")
    assert token not in line and "Authorization" not in line


def test_json_lines_carry_the_request_id_of_their_context_and_exceptions():
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom %s", ("now",), None)
    token = request_id_var.set("rid-9")
    try:
        RequestIdFilter().filter(record)
    finally:
        request_id_var.reset(token)
    try:
        raise ValueError("bad")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "boom now" and entry["request_id"] == "rid-9" and entry["level"] == "ERROR"
    assert "ValueError: bad" in entry["exc_info"]


@pytest.fixture
def e2e_key_plain(db):
    from tasks_app.services.organisations import create_organisation

    key = create_organisation(name="Metrics")[1]
    return key, key.plaintext_token


def test_a_source_that_cannot_be_read_is_reported_and_the_rest_served(client):
    from tests.servers import free_port

    with override_settings(CELERY_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0"):  # nothing listens there
        started = time.monotonic()
        response = scrape(client)
        assert time.monotonic() - started < 5
    text = response.content.decode()
    assert response.status_code == 200
    assert 'ricloud_scrape_source_up{source="redis"} 0.0' in text
    assert 'ricloud_scrape_source_up{source="database"} 1.0' in text and "ricloud_queue_depth" not in text


def test_the_text_format_names_the_request_id_when_there_is_one():
    from ricloud_server.requestlog import TextFormatter

    record = logging.LogRecord("ricloud.request", logging.INFO, __file__, 1, "GET /tasks 200 1.0ms", (), None)
    record.request_id = "rid-7"
    assert TextFormatter().format(record).endswith(" INFO ricloud.request [rid-7]: GET /tasks 200 1.0ms")
    record.request_id = None
    assert TextFormatter().format(record).endswith(" INFO ricloud.request: GET /tasks 200 1.0ms")


def test_a_metrics_directory_whose_maker_died_is_removed_by_the_next_one(tmp_path, monkeypatch):
    import subprocess
    import sys

    from ricloud_server import metrics

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = tmp_path / f"ricloud-metrics-{dead.stdout.strip()}-abc"
    alive = tmp_path / f"ricloud-metrics-{os.getppid()}-def"
    orphan.mkdir()
    alive.mkdir()
    made = metrics.prepare_multiprocess_dir()
    try:
        assert not orphan.exists() and alive.exists()
        assert made.startswith(str(tmp_path / f"ricloud-metrics-{os.getpid()}-"))
    finally:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        os.environ.pop(metrics.AUTO_DIR_ENV, None)
