"""GET /health, /ready and /version as a probe sees them (tasks_app/ops.py, DECISIONS 90-92).

These run in-process; tests/ops/test_ready_e2e.py drives the production web process with a real
worker, and with Postgres or Redis unreachable."""
import pytest

from ricloud_server import __version__


@pytest.fixture
def probe(client, settings):
    """An anonymous client that says what a container probe says (Host: 127.0.0.1:8000), on a
    server whose ALLOWED_HOSTS does not list it and whose rate limits are tiny."""
    settings.ALLOWED_HOSTS = ["ricloud.example.org"]
    settings.RICLOUD_RATE_LIMIT_ORGANISATION = "1/hour"
    settings.RICLOUD_RATE_LIMIT_FAILED_AUTH = "1/hour"
    client.defaults["HTTP_HOST"] = "127.0.0.1:8000"
    return client


def test_health_needs_no_database_no_token_and_no_allowed_host(probe):
    # No django_db mark: any database access would fail this test.
    for _ in range(3):  # never rate limited
        response = probe.get("/health")
        assert response.status_code == 200
        assert response.json() == {"status": "ok", "version": __version__}
        assert response["Content-Type"] == "application/json" and response["Cache-Control"] == "no-store"
    assert probe.get("/health/").json()["status"] == "ok"  # both forms, as every v3 path
    assert probe.get("/health", HTTP_AUTHORIZATION="Token not-a-token").status_code == 200


def test_version(probe):
    response = probe.get("/version")
    assert response.status_code == 200 and response.json() == {"version": __version__}
    assert __version__.count(".") == 2


def test_head_answers_without_a_body_and_other_methods_are_405(probe):
    head = probe.head("/health")
    assert head.status_code == 200 and head.content == b""
    for path in ("/health", "/ready", "/version"):
        response = probe.post(path)
        assert response.status_code == 405 and response["Allow"] == "GET, HEAD"
        assert response.json()["error"] == "method-not-allowed"


def test_other_paths_still_go_through_the_host_check(probe):
    assert probe.get("/organisation").status_code == 400  # DisallowedHost: only the probes skip it
    assert probe.get("/healthz").status_code == 400


@pytest.mark.django_db
def test_ready_is_503_without_a_worker_and_says_which_check_fails(probe, settings):
    settings.RICLOUD_READY_TIMEOUT_SECONDS = 0.3  # the broker is reachable; nobody answers the ping
    response = probe.get("/ready")
    assert response.status_code == 503 and response["Retry-After"] == "5"
    body = response.json()
    assert body["status"] == "unavailable" and body["error"] == "service-unavailable"
    assert body["message"] == "Not ready: workers failing."
    assert body["checks"]["database"]["status"] == "ok" and body["checks"]["redis"]["status"] == "ok"
    assert body["checks"]["workers"] == {"status": "failing", "error": "RuntimeError: no worker answered within 0.3 s",
                                         "seconds": body["checks"]["workers"]["seconds"]}


@pytest.mark.django_db
def test_ready_with_redis_unreachable(probe, settings):
    settings.CELERY_BROKER_URL = settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = probe.get("/ready")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"]["status"] == "ok"
    assert checks["redis"]["status"] == "failing" and "ConnectionError" in checks["redis"]["error"]
    assert checks["workers"]["status"] == "failing" and "not checked" in checks["workers"]["error"]
    assert response.json()["message"] == "Not ready: redis, workers failing."


@pytest.mark.django_db
def test_ready_is_200_when_a_worker_answers(probe, monkeypatch):
    from ricloud_server.celery import app

    monkeypatch.setattr(app.control, "ping", lambda timeout, limit: [{"celery@worker-1": {"ok": "pong"}}])
    response = probe.get("/ready")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok" and body["version"] == __version__
    assert body["checks"]["workers"]["answered"] == ["celery@worker-1"]
    assert {name: check["status"] for name, check in body["checks"].items()} == {
        "database": "ok", "redis": "ok", "workers": "ok"}


@pytest.mark.django_db(transaction=True)
def test_concurrent_probes_share_one_worker_ping(settings, monkeypatch):
    import threading
    import time

    from django.test import Client

    from ricloud_server.celery import app

    sent = []

    def ping(timeout, limit):
        sent.append(1)
        time.sleep(0.3)
        return [{"celery@worker-1": {"ok": "pong"}}]

    monkeypatch.setattr(app.control, "ping", ping)
    statuses = []

    def probe():
        statuses.append(Client().get("/ready").status_code)

    first = threading.Thread(target=probe)
    first.start()
    time.sleep(0.1)  # the first ping is in flight: the next probes wait for one more, together
    others = [threading.Thread(target=probe) for _ in range(4)]
    for thread in others:
        thread.start()
    for thread in [first, *others]:
        thread.join(10)
    assert statuses == [200] * 5
    assert len(sent) == 2
