"""The subscription pass runs in every worker (no beat), and asmaster answers in the v2 envelope
even where Django itself refuses a request."""
import threading

import pytest

from asmaster_app import loop

pytestmark = pytest.mark.django_db


def test_a_ready_worker_runs_the_pass_every_interval(monkeypatch):
    ran = threading.Event()
    monkeypatch.setattr("asmaster_app.services.run_due", lambda: ran.set())
    monkeypatch.setenv("RICLOUD_ASMASTER_LOOP_SECONDS", "0.05")
    monkeypatch.setattr(loop, "_stop", threading.Event())
    thread = loop.start(loop.loop_seconds())
    try:
        assert ran.wait(5)
    finally:
        loop._on_shutdown()
        thread.join(5)
    assert not thread.is_alive()


def test_zero_disables_the_loop(monkeypatch):
    monkeypatch.setenv("RICLOUD_ASMASTER_LOOP_SECONDS", "0")
    started = []
    monkeypatch.setattr(loop, "start", started.append)
    loop._on_worker_ready()
    assert started == []


def test_a_pass_that_fails_is_retried(monkeypatch):
    calls = []

    def run_due():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database down")

    monkeypatch.setattr("asmaster_app.services.run_due", run_due)
    monkeypatch.setattr(loop, "_stop", threading.Event())
    thread = loop.start(0.02)
    try:
        for _ in range(250):
            if len(calls) >= 2:
                break
            threading.Event().wait(0.02)
        assert len(calls) >= 2
    finally:
        loop._on_shutdown()
        thread.join(5)


def test_an_unreadable_body_is_a_v2_error(am):
    response = am.generic("POST", "/subscribe-account/", b"x", content_type="multipart/form-data")
    assert response.status_code == 400
    body = response.json()
    assert body["success"] is False and body["errors"]["__all__"][0][1] == "invalid"
