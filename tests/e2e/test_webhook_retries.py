"""Webhook retries with real workers: the schedule is on the delivery row and the workers'
maintenance loop sends what is due, so a receiver sees each attempt once, even when the worker
making an attempt is killed."""
import time

import pytest
from django.db import transaction

from tasks_app.models import Event, WebhookConfig
from tasks_app.sealing import seal
from tasks_app.services.webhooks import LOST, enqueue_deliveries

from ..flaky_receiver import FlakyReceiver
from .conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# Tiny schedule: attempt 2 after 0.3 s, attempt 3 after 1.2 s, swept every 0.5 s.
FAST = {"RICLOUD_WEBHOOK_ALLOW_PRIVATE": 1, "RICLOUD_WEBHOOK_BACKOFF_SECONDS": 0.3,
        "RICLOUD_REAPER_INTERVAL_SECONDS": 0.5, "RICLOUD_WEBHOOK_ATTEMPT_LEASE_SECONDS": 3}


def configure(key, url) -> WebhookConfig:
    config = WebhookConfig.objects.create(organisation=key.organisation, url=url, secret=seal("whsec"), state="valid")
    key.organisation.webhook_config_default = config
    key.organisation.save()
    return config


def test_a_receiver_failing_twice_sees_three_attempts_per_event(e2e_key, live_api, start_worker):
    receiver = FlakyReceiver(failures=[503, 502])
    try:
        configure(e2e_key, receiver.url)
        start_worker(**FAST)
        api = live_api(e2e_key)
        api.open_session("hooks@example.com")
        events = api.get("/events", limit=100)["data"]
        assert len(events) >= 3
        wait_for(lambda: all(api.get(f"/events/{e['id']}")["state"] == "delivered" for e in events), timeout=60)
        time.sleep(1.5)  # a few more sweeps: nothing more is sent
        for event in events:
            assert receiver.answered(event["id"]) == [503, 502, 200], event
            (delivery,) = api.get(f"/events/{event['id']}/deliveries")["deliveries"]
            assert delivery["state"] == "delivered"
            assert [(a["number"], a["status_code"]) for a in delivery["attempts"]] == [(1, 503), (2, 502), (3, 200)]
            assert api.get(f"/events/{event['id']}")["retries"] == 2
    finally:
        receiver.close()


def test_a_worker_killed_mid_attempt_costs_one_slot_and_nothing_is_sent_twice(e2e_key, live_api, start_worker):
    receiver = FlakyReceiver(failures=[503], hold_first=4)
    try:
        configure(e2e_key, receiver.url)
        doomed = start_worker(**FAST)
        with transaction.atomic():
            event = Event.objects.create(organisation=e2e_key.organisation, key=e2e_key, type="session",
                                         action="created", object_id="1", data={"id": "1", "resource": "session"})
            enqueue_deliveries([event])
        wait_for(lambda: receiver.answered(event.id))  # attempt 1 is in the receiver's hands
        doomed.kill()
        start_worker(**FAST)
        api = live_api(e2e_key)
        wait_for(lambda: api.get(f"/events/{event.id}")["state"] == "delivered", timeout=30)
        time.sleep(1.5)
        assert receiver.answered(event.id) == [503, 200]  # attempt 1 (cut off) and attempt 2
        (delivery,) = api.get(f"/events/{event.id}/deliveries")["deliveries"]
        assert [(a["number"], a["status_code"], a["error"]) for a in delivery["attempts"]] == [
            (1, None, LOST), (2, 200, "")]
    finally:
        receiver.close()
