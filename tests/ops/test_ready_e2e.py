"""/health and /ready of the production web process (the Procfile's web line) with a real Celery
worker, then with the worker gone and with Postgres unreachable."""
import pytest
import requests

from tests.e2e.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def statuses(body: dict) -> dict:
    return {name: check["status"] for name, check in body["checks"].items()}


def test_ready_follows_the_worker(start_web, start_worker):
    web = start_web()
    assert requests.get(f"{web.url}/health", timeout=10).json()["status"] == "ok"
    worker = start_worker()
    ready = requests.get(f"{web.url}/ready", timeout=10)
    assert ready.status_code == 200, ready.text
    assert statuses(ready.json()) == {"database": "ok", "redis": "ok", "workers": "ok"}
    assert ready.json()["checks"]["workers"]["answered"][0].startswith("celery@")
    assert ready.elapsed.total_seconds() < 1  # the first pong ends the wait

    worker.stop()
    # (a Response is falsy when its status is an error: wait for the status, then read the body)
    wait_for(lambda: requests.get(f"{web.url}/ready", timeout=10).status_code == 503)
    ready = requests.get(f"{web.url}/ready", timeout=10)
    assert statuses(ready.json()) == {"database": "ok", "redis": "ok", "workers": "failing"}
    assert ready.headers["Retry-After"] == "5"


def test_health_stays_up_while_postgres_is_unreachable(start_web):
    web = start_web(DATABASE_URL="postgres://root@127.0.0.1:1/nothing")
    health = requests.get(f"{web.url}/health", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    ready = requests.get(f"{web.url}/ready", timeout=10)
    assert ready.status_code == 503
    body = ready.json()
    assert body["checks"]["database"]["status"] == "failing" and "OperationalError" in body["checks"]["database"]["error"]
    assert body["checks"]["redis"]["status"] == "ok"
    assert "database" in body["message"]
