"""Webhook retries from the schedule on the delivery row: each slot is sent once, whoever sweeps
and whatever happens to the worker that claimed it."""
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from tasks_app.models import Event, WebhookAttempt, WebhookConfig, WebhookDelivery
from tasks_app.sealing import seal
from tasks_app.services.webhooks import LOST, deliver_event, sweep_deliveries
from workers import maintenance
from workers.publishers.webhooks import post

from ..flaky_receiver import FlakyReceiver


class Died(BaseException):
    """What a worker killed in the middle of an attempt leaves: a committed claim, no outcome."""


def dies(**job):
    raise Died


@pytest.fixture
def receiver(settings):
    settings.RICLOUD_WEBHOOK_ALLOW_PRIVATE = True
    receiver = FlakyReceiver(failures=[503, 502])
    yield receiver
    receiver.close()


def configure(key, url) -> WebhookConfig:
    config = WebhookConfig.objects.create(organisation=key.organisation, url=url, secret=seal("whsec"), state="valid")
    key.organisation.webhook_config_default = config
    key.organisation.save()
    return config


def new_event(key, n=0) -> Event:
    return Event.objects.create(organisation=key.organisation, key=key, type="session", action="created",
                                object_id=str(n), data={"id": str(n), "resource": "session"})


def attempts(event) -> list:
    return list(WebhookAttempt.objects.filter(delivery__event=event).order_by("number")
                .values_list("number", "status_code", "error"))


def wait_until_settled(events, timeout=60):
    deadline = time.monotonic() + timeout
    while WebhookDelivery.objects.filter(event__in=events).exclude(state="pending").count() < len(events):
        assert time.monotonic() < deadline, "deliveries still pending"
        time.sleep(0.05)


@pytest.mark.django_db
class TestTheMaintenanceSweep:
    def test_a_receiver_that_fails_twice_gets_exactly_three_attempts(self, key, receiver, settings, api):
        settings.RICLOUD_WEBHOOK_BACKOFF_SECONDS = 0.05
        configure(key, receiver.url)
        event = new_event(key)
        assert deliver_event(event.id, send=post) == "pending"  # the event's message: attempt 1
        for _ in range(100):
            if maintenance.sweep_webhooks()["delivered"]:
                break
            time.sleep(0.02)
        for _ in range(5):
            maintenance.sweep_webhooks()  # nothing left to send
        assert receiver.answered(event.id) == [503, 502, 200]
        body = api.get(f"/events/{event.id}/deliveries").json()
        (delivery,) = body["deliveries"]
        assert delivery["state"] == "delivered"
        assert [(a["number"], a["status_code"]) for a in delivery["attempts"]] == [(1, 503), (2, 502), (3, 200)]
        event = api.get(f"/events/{event.id}").json()
        assert (event["state"], event["retries"]) == ("delivered", 2)

    def test_the_retry_waits_for_its_slot(self, key, receiver, settings):
        settings.RICLOUD_WEBHOOK_BACKOFF_SECONDS = 0.5
        configure(key, receiver.url)
        event = new_event(key)
        deliver_event(event.id, send=post)
        started = time.monotonic()
        while not maintenance.sweep_webhooks()["attempts"]:
            time.sleep(0.02)
        assert time.monotonic() - started > 0.4  # attempt 2 not before base × 4⁰
        assert receiver.answered(event.id) == [503, 502]
        assert WebhookDelivery.objects.get(event=event).attempts == 2

    def test_a_worker_that_dies_mid_attempt_loses_that_slot_only(self, key, receiver, settings):
        settings.RICLOUD_WEBHOOK_BACKOFF_SECONDS = 0.01
        settings.RICLOUD_WEBHOOK_ATTEMPT_LEASE_SECONDS = 0.5
        receiver.failures = []
        configure(key, receiver.url)
        event = new_event(key)
        with pytest.raises(Died):
            deliver_event(event.id, send=dies)
        assert attempts(event) == [(1, None, "in progress")]
        assert deliver_event(event.id, send=post) == "pending"  # the message redelivered: slot taken
        assert sweep_deliveries(send=post)["attempts"] == 0  # the lease still runs
        time.sleep(0.6)
        assert sweep_deliveries(send=post)["delivered"] == 1
        assert receiver.answered(event.id) == [200]
        assert attempts(event) == [(1, None, LOST), (2, 200, "")]
        assert Event.objects.get(id=event.id).retries == 1

    def test_a_lost_last_attempt_fails_the_delivery(self, key, receiver, settings):
        settings.RICLOUD_WEBHOOK_MAX_ATTEMPTS = 1
        settings.RICLOUD_WEBHOOK_ATTEMPT_LEASE_SECONDS = 0.2
        configure(key, receiver.url)
        event = new_event(key)
        with pytest.raises(Died):
            deliver_event(event.id, send=dies)
        time.sleep(0.3)
        assert sweep_deliveries(send=post)["failed_lost"] == 1
        assert WebhookDelivery.objects.get(event=event).state == "failed"
        assert Event.objects.get(id=event.id).state == "failed"
        assert attempts(event) == [(1, None, LOST)]
        assert receiver.answered(event.id) == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrent sweepers on a database server")
def test_concurrent_sweepers_and_redelivered_messages_send_each_slot_once(key, receiver, settings):
    """Two sweepers and every event's message delivered twice, all at once: each event is sent
    exactly once per slot (503, 502, 200)."""
    settings.RICLOUD_WEBHOOK_BACKOFF_SECONDS = 0.05
    configure(key, receiver.url)
    events = [new_event(key, n) for n in range(12)]
    stop = threading.Event()
    errors = []

    def in_thread(work):
        def run():
            try:
                work()
            except Exception as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)
            finally:
                connection.close()
        return threading.Thread(target=run)

    def sweeper():
        while not stop.is_set():
            sweep_deliveries(send=post, concurrency=4)
            time.sleep(0.01)

    def messages():
        for event in events:
            deliver_event(event.id, send=post)

    threads = [in_thread(sweeper), in_thread(sweeper), in_thread(messages), in_thread(messages)]
    for thread in threads:
        thread.start()
    try:
        wait_until_settled(events)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert errors == []
    for event in events:
        assert receiver.answered(event.id) == [503, 502, 200], event.id
        assert [(n, status) for n, status, _ in attempts(event)] == [(1, 503), (2, 502), (3, 200)]
    assert set(WebhookDelivery.objects.values_list("state", "attempts")) == {("delivered", 3)}


def session_created(api) -> Event:
    """POST /users and POST /sessions; the `session.created` event."""
    user = api.post_json("/users", {"identifier": "row@example.com"}).json()
    session = api.post_json("/sessions", {"source": {"user": user["id"], "type": "mocks.mock",
                                                     "identifier": "row@example.com"}, "payload": {}}).json()
    return Event.objects.get(type="session", action="created", object_id=session["id"])


@pytest.mark.django_db(transaction=True)
class TestTheDeliveryRowComesWithTheEvent:
    """A delivery is scheduled in the transaction that writes its event, so losing the event's
    message (a Redis restart, a failed send) delays the first attempt, never drops it."""

    @pytest.fixture
    def lost_messages(self, monkeypatch):
        from tasks_app.services import webhooks

        sent = []
        monkeypatch.setattr(webhooks, "_send_deliveries", sent.append)  # the message never reaches a worker
        return sent

    def test_a_lost_first_message_is_sent_by_the_sweep_once_due(self, key, receiver, settings, lost_messages, api):
        settings.RICLOUD_WEBHOOK_FIRST_ATTEMPT_GRACE_SECONDS = 30
        receiver.failures = []
        configure(key, receiver.url)
        event = session_created(api)
        assert any(str(event.id) in batch for batch in lost_messages)
        (delivery,) = WebhookDelivery.objects.filter(event=event)
        assert (delivery.state, delivery.attempts) == ("pending", 0)
        assert maintenance.sweep_webhooks()["attempts"] == 0  # not due yet: the message may still come
        # Its grace runs out (moved, not slept: a slow machine must not make it due before the check).
        WebhookDelivery.objects.filter(id=delivery.id).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
        assert maintenance.sweep_webhooks()["delivered"] >= 1
        for _ in range(3):
            maintenance.sweep_webhooks()
        assert receiver.answered(event.id) == [200]

    def test_the_message_takes_the_first_attempt_before_the_row_is_due(self, key, receiver, settings, lost_messages,
                                                                       api):
        settings.RICLOUD_WEBHOOK_FIRST_ATTEMPT_GRACE_SECONDS = 30
        receiver.failures = []
        configure(key, receiver.url)
        event = session_created(api)
        assert deliver_event(event.id, send=post) == "delivered"  # the (late) message
        assert deliver_event(event.id, send=post) == "delivered"  # redelivered: the slot is taken
        assert maintenance.sweep_webhooks()["attempts"] == 0
        assert receiver.answered(event.id) == [200]
        assert WebhookDelivery.objects.filter(event=event).count() == 1
