"""/metrics of the production web process (two gunicorn workers) and of a real Celery worker's
own port, after real requests and tasks; the request id from a request to the worker's log line
of the task it enqueued; the JSON request line in the web's log (docs/DECISIONS.md 100-109)."""
import json
import threading

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from ricloud_server import __version__
from tasks_app.models import WebhookConfig
from tasks_app.sealing import seal
from tests.e2e.conftest import LiveApi, wait_for
from tests.receiver import Receiver
from tests.servers import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

REQUEST_ID = "e2e-metrics-7f3a"


def samples(text: str) -> dict:
    """{(name, frozenset(labels)): value} of an exposition."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: dict, name: str, **labels) -> float | None:
    return found.get((name, frozenset(labels.items())))


def json_lines(path) -> list[dict]:
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def test_metrics_and_request_ids_across_web_processes_and_a_worker(e2e_key, start_web, start_worker):
    receiver = Receiver()
    try:
        config = WebhookConfig.objects.create(organisation=e2e_key.organisation, url=receiver.url,
                                              secret=seal("whsec"), state="valid")
        e2e_key.organisation.webhook_config_default = config
        e2e_key.organisation.save()
        worker_port = free_port()
        worker = start_worker(RICLOUD_WEBHOOK_ALLOW_PRIVATE=1, RICLOUD_WORKER_METRICS_PORT=worker_port)
        web = start_web(WEB_CONCURRENCY=2, RICLOUD_WEBHOOK_ALLOW_PRIVATE=1)
        api = LiveApi(web.url, e2e_key)

        # Real work, with a request id of our own on the session's creation.
        user = api.call("POST", "/users", expect=201, json={"identifier": "metrics@example.com"})
        response = api.request("POST", "/sessions", headers={"X-Request-Id": REQUEST_ID}, json={
            "source": {"user": user["id"], "type": "mocks.mock", "identifier": "metrics@example.com"},
            "payload": {"password": "pw"}})
        assert response.status_code == 201, response.text
        assert response.headers["X-Request-Id"] == REQUEST_ID
        session = response.json()
        wait_for(lambda: api.get(f"/sessions/{session['id']}")["state"] == "active")
        # Held: logged and counted once its answer is sent (serve.py).
        poll = api.call("POST", "/polls", expect=201, headers={"Ricloud-Await": "60"}, json={
            "session": session["id"], "payload": {"data_types": ["messages.sms"]}})
        assert poll["state"] == "completed"
        generated = api.request("GET", "/tasks").headers["X-Request-Id"]
        assert len(generated) == 32

        # Twenty probes over fresh connections: whichever of the two processes answered, the
        # scrape sums both.
        for _ in range(20):
            assert requests.get(f"{web.url}/health", timeout=10).status_code == 200
        # An open aschannel stream is counted while it is open.
        stream_open = threading.Event()
        stream = requests.get(f"{web.url}/stream/", params={"stream": e2e_key.stream}, stream=True, timeout=30,
                              headers={"Authorization": f"Token {e2e_key.plaintext_token}"})

        def read():
            try:
                for _ in stream.iter_content(64):
                    stream_open.set()
            except (requests.RequestException, AttributeError):  # closed by the test
                pass
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        assert stream.status_code == 200 and stream_open.wait(10)

        def scraped():
            found = samples(requests.get(f"{web.url}/metrics", timeout=10).text)
            return found if value(found, "ricloud_held_connections", kind="stream") == 1 else None
        found = wait_for(scraped, timeout=10)
        stream.close()

        assert value(found, "ricloud_http_requests_total", method="GET", route="/health", status="200") == 20
        assert value(found, "ricloud_http_requests_total", method="POST", route="/sessions", status="201") == 1
        assert value(found, "ricloud_http_requests_total", method="POST", route="/polls", status="201") == 1
        assert value(found, "ricloud_http_request_duration_seconds_count", method="POST", route="/polls") == 1
        assert value(found, "ricloud_http_request_duration_seconds_count", method="POST", route="/sessions") == 1
        assert value(found, "ricloud_tasks_finished_total", type="session.init", state="succeeded") == 1
        assert value(found, "ricloud_tasks_finished_total", type="data", state="succeeded") == 1
        assert value(found, "ricloud_tasks_created_total", type="data") == 1
        assert value(found, "ricloud_queue_depth", queue="tasks") == 0
        assert value(found, "ricloud_queue_depth", queue="webhooks") is not None
        assert value(found, "ricloud_scrape_source_up", source="redis") == 1
        assert not any(name.startswith("ricloud_task_run_seconds") for name, _ in found)  # the worker's own

        # The worker's own metrics: run time and queue wait of the tasks it ran, webhook attempts.
        def worker_scraped():
            found = samples(requests.get(f"http://127.0.0.1:{worker_port}/metrics", timeout=10).text)
            return found if (value(found, "ricloud_webhook_attempts_total", outcome="delivered") or 0) >= 2 else None
        found = wait_for(worker_scraped, timeout=30)
        runs = value(found, "ricloud_task_run_seconds_count", outcome="succeeded")
        assert runs is not None and runs >= 2  # session.init and the poll's data task
        assert value(found, "ricloud_task_queue_wait_seconds_count", task="ricloud.run_task") >= 2
        assert value(found, "ricloud_worker_tasks_total", task="ricloud.run_task", outcome="succeeded") == runs
        assert value(found, "ricloud_worker_tasks_total", task="ricloud.deliver_event", outcome="ok") >= 1
        assert requests.get(f"http://127.0.0.1:{worker_port}/metrics", timeout=10,
                            headers={"Authorization": "Bearer x"}).status_code == 200  # no token configured

        # The request id in the worker's log lines for the delivery of the session's event.
        def worker_lines():
            return [line for line in json_lines(worker.log_path) if line.get("request_id") == REQUEST_ID]
        lines = wait_for(worker_lines, timeout=30)
        assert any("ricloud.deliver_event" in line["message"] and "succeeded" in line["message"] for line in lines)

        # The web's request lines: JSON, one per request, with ids and never the token.
        web_log = web.log_path.read_text(errors="replace")
        assert e2e_key.plaintext_token not in web_log
        (line,) = [line for line in json_lines(web.log_path)
                   if line.get("logger") == "ricloud.request" and line.get("request_id") == REQUEST_ID]
        assert {k: line[k] for k in ("method", "route", "status", "key_id", "organisation_id")} == {
            "method": "POST", "route": "/sessions", "status": 201, "key_id": e2e_key.id,
            "organisation_id": e2e_key.organisation_id}
        assert line["duration_ms"] > 0 and line["level"] == "INFO"
        assert any(entry.get("request_id") == generated and entry.get("route") == "/tasks"
                   for entry in json_lines(web.log_path))
    finally:
        receiver.close()


def test_a_token_protects_both_the_web_and_the_worker_port(e2e_key, start_web, start_worker):
    token = "scrape-token-abcdef0123456789"
    worker_port = free_port()
    start_worker(RICLOUD_WORKER_METRICS_PORT=worker_port, RICLOUD_METRICS_TOKEN=token)
    web = start_web(RICLOUD_METRICS_TOKEN=token)
    for url in (f"{web.url}/metrics", f"http://127.0.0.1:{worker_port}/metrics"):
        refused = requests.get(url, timeout=10)
        assert refused.status_code == 401, url
        assert refused.json()["error"] == "unauthorized"
        assert requests.get(url, timeout=10, headers={"Authorization": "Bearer nope"}).status_code == 401
        allowed = requests.get(url, timeout=10, headers={"Authorization": f"Bearer {token}"})
        assert allowed.status_code == 200 and allowed.headers["Content-Type"].startswith("text/plain"), url
        assert value(samples(allowed.text), "ricloud_build_info", version=__version__) == 1, url
    web_log = web.log_path.read_text(errors="replace")
    assert token not in web_log


def test_the_worker_logs_a_task_under_the_request_id_its_message_carries(broker, start_worker):
    """Both ways a message reaches the broker: Celery's producer (before_task_publish adds the id
    of the request in progress) and a run_task message written directly, as dispatch does, with
    the header added (docs/DECISIONS.md 103)."""
    import uuid

    from ricloud_server.celery import app
    from ricloud_server.requestlog import CELERY_HEADER, request_id_var
    from tasks_app.services.dispatch import TASKS_QUEUE, celery_message

    worker = start_worker()
    token = request_id_var.set("published-through-celery")
    try:
        app.send_task("ricloud.reap_tasks", queue=TASKS_QUEUE)
    finally:
        request_id_var.reset(token)
    task_id = str(uuid.uuid4())  # no such task: the run ends "lost", and is logged
    message = json.loads(celery_message(task_id))
    message["headers"][CELERY_HEADER] = "written-directly"
    broker.lpush(TASKS_QUEUE, json.dumps(message))

    def outcome_lines():
        lines = {line.get("request_id"): line["message"] for line in json_lines(worker.log_path)
                 if line.get("logger") == "celery.app.trace"}
        return lines if {"published-through-celery", "written-directly"} <= set(lines) else None
    lines = wait_for(outcome_lines, timeout=30)
    assert "ricloud.reap_tasks" in lines["published-through-celery"]
    assert f"ricloud.run_task[{task_id}]" in lines["written-directly"] and "lost" in lines["written-directly"]
