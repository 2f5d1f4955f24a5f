"""Webhook configs, the test task, and signed event delivery with retries (API.md §2.11, §4)."""
import json
import time

import pytest
from ricloud.signing import Signature

from tasks_app.models import Event, Task, User, WebhookAttempt, WebhookConfig, WebhookDelivery
from tasks_app.sealing import seal
from tasks_app.services import webhooks
from tasks_app.services.sessions import create_session
from tasks_app.services.webhooks import backoff_seconds, sweep_deliveries
from workers.publishers.webhooks import post, sign
from workers.runner import run

from ..receiver import Receiver

pytestmark = pytest.mark.django_db


def deliver_event(event_id, **kwargs):
    """The event's first attempt, as its Celery message makes it."""
    return webhooks.deliver_event(event_id, send=post, **kwargs)


def sweep_until_settled(event_id, passes=50):
    """Run the maintenance loop's sweep until the event's delivery is no longer pending."""
    for _ in range(passes):
        sweep_deliveries(send=post)
        if WebhookDelivery.objects.get(event_id=event_id).state != "pending":
            return WebhookDelivery.objects.get(event_id=event_id).state
        time.sleep(0.02)
    raise AssertionError("the delivery is still pending")


@pytest.fixture
def allow_private(settings):
    settings.RICLOUD_WEBHOOK_ALLOW_PRIVATE = True


@pytest.fixture
def receiver(allow_private):
    receiver = Receiver()
    yield receiver
    receiver.close()


def assert_error(response, status, code):
    assert response.status_code == status, response.content
    assert response.json()["error"] == code
    return response.json()


def verify(request, secret):
    """What a receiver built on ricloud-py 3.2.0 does (ricloud/webhooks.py)."""
    signature = Signature.from_header(request["headers"]["Ricloud-Signature"])
    signature.verify(request["body"].decode("utf-8"), secret, delta=600)
    return json.loads(request["body"])


def test_the_documented_signature_example():
    body = b'{"id":"e1","resource":"event","type":"task","action":"succeeded"}'
    assert sign("whsec-example", 1580000000, body) == "zgJrUbEmQwBLtAX2/kpG2hYii4z56WPo12Zbn5vRm7o="


class TestConfigs:
    def test_create_returns_the_config_with_its_secret_and_queues_a_test(self, api, receiver):
        response = api.post_json("/configs/webhook", {"url": receiver.url})
        assert response.status_code == 201
        body = response.json()
        assert set(body) == {"id", "resource", "organisation", "url", "secret", "state", "date_created"}
        assert body["resource"] == "webhook_config" and body["state"] == "new" and body["secret"]
        task = Task.objects.get(type="webhook_config.test")
        assert task.target == str(body["id"]) and task.user_id is None and task.source_type is None

    def test_the_test_task_delivers_a_signed_test_event_and_validates(self, api, receiver):
        config = api.post_json("/configs/webhook", {"url": receiver.url}).json()
        task = api.post_json(f"/configs/webhook/{config['id']}/test", None).json()
        assert task["resource"] == "task" and task["type"] == "webhook_config.test" and task["target"] == str(config["id"])
        assert run(task["id"], max_attempts=5) == "succeeded"
        (request,) = receiver.requests
        event = verify(request, config["secret"])
        assert request["headers"]["Content-Type"] == "application/json"
        assert request["path"] == f"/webhooks/{event['id']}"
        assert (event["type"], event["action"], event["data"]["id"]) == ("webhook_config", "test", config["id"])
        assert api.get(f"/configs/webhook/{config['id']}").json()["state"] == "valid"

    def test_a_failing_receiver_makes_the_config_invalid(self, api, allow_private):
        receiver = Receiver(statuses=[500])
        try:
            config = api.post_json("/configs/webhook", {"url": receiver.url}).json()
            task = Task.objects.get(type="webhook_config.test")
            assert run(task.id, max_attempts=5) == "failed"
            assert Task.objects.get(id=task.id).error == "webhook-test-failed"
            assert len(receiver.requests) == 1  # a test is one attempt
            assert api.get(f"/configs/webhook/{config['id']}").json()["state"] == "invalid"
        finally:
            receiver.close()

    def test_update_resets_to_new_and_retests(self, api, receiver):
        config = api.post_json("/configs/webhook", {"url": receiver.url}).json()
        run(Task.objects.get(type="webhook_config.test").id, max_attempts=5)
        body = api.post_json(f"/configs/webhook/{config['id']}", {"url": receiver.url + "/v2"}).json()
        assert body["state"] == "new" and body["url"].endswith("/webhooks/v2")
        assert Task.objects.filter(type="webhook_config.test").count() == 2

    def test_delete_deactivates_and_returns_it(self, api, receiver):
        config = api.post_json("/configs/webhook", {"url": receiver.url}).json()
        response = api.delete(f"/configs/webhook/{config['id']}")
        assert response.status_code == 200 and response.json()["state"] == "deactivated"

    @pytest.mark.parametrize("url", ["http://127.0.0.1:9/hook", "http://10.1.2.3/hook", "http://169.254.169.254/latest",
                                     "http://[::1]/hook", "http://localhost/hook", "ftp://example.com/x", "not a url"])
    def test_private_and_malformed_targets_are_refused(self, api, url):
        body = assert_error(api.post_json("/configs/webhook", {"url": url}), 400, "invalid-parameter")
        assert "url" in body["params"]
        assert not WebhookConfig.objects.exists()

    def test_configs_of_another_organisation_are_404(self, api, other_api, receiver):
        config = api.post_json("/configs/webhook", {"url": receiver.url}).json()
        for response in (other_api.get(f"/configs/webhook/{config['id']}"),
                         other_api.post_json(f"/configs/webhook/{config['id']}/test", None),
                         other_api.delete(f"/configs/webhook/{config['id']}")):
            assert_error(response, 404, "not-found")
        assert other_api.get("/configs/webhook").json()["data"] == []

    def test_organisation_default_and_key_override(self, api, other_api, receiver, key):
        config = api.post_json("/configs/webhook", {"url": receiver.url}).json()
        body = api.post_json("/organisation", {"webhook_config_default": config["id"]}).json()
        assert body["webhook_config_default"] == config["id"]
        assert [c["id"] for c in body["webhook_configs"]["data"]] == [config["id"]]
        assert body["webhook_configs"]["resource"] == "list"
        assert api.post_json(f"/keys/{key.id}", {"webhook_config": config["id"]}).json()["webhook_config"] == config["id"]
        foreign = assert_error(other_api.post_json("/organisation", {"webhook_config_default": config["id"]}), 400,
                               "invalid-parameter")
        assert "webhook_config_default" in foreign["params"]


class TestDelivery:
    @pytest.fixture
    def event(self, key):
        user = User.objects.create(organisation=key.organisation, key=key, identifier="u")
        create_session(key=key, user=user, source_type="mocks.mock", identifier="x", payload={})
        return Event.objects.get(type="session", action="created")

    def configure(self, key, url):
        config = WebhookConfig.objects.create(organisation=key.organisation, url=url, secret=seal("whsec-test"),
                                              state="valid")
        key.organisation.webhook_config_default = config
        key.organisation.save()
        return config

    def test_a_2xx_delivers_once_signed(self, key, event, receiver):
        self.configure(key, receiver.url + "/")
        assert deliver_event(event.id) == "delivered"
        assert deliver_event(event.id) == "delivered"  # idempotent: no second POST
        (request,) = receiver.requests
        body = verify(request, "whsec-test")
        assert request["path"] == f"/webhooks/{event.id}"
        assert body["id"] == str(event.id) and body["type"] == "session" and body["action"] == "created"
        event.refresh_from_db()
        assert event.state == "delivered" and event.retries == 0 and event.date_delivered

    def test_the_backoff_schedule(self, settings):
        settings.RICLOUD_WEBHOOK_BACKOFF_SECONDS = 60
        assert [backoff_seconds(n) for n in range(1, 5)] == [60, 240, 960, 3840]

    def test_5xx_is_retried_on_schedule_until_delivered(self, key, event, allow_private, settings):
        settings.RICLOUD_WEBHOOK_BACKOFF_SECONDS = 30
        receiver = Receiver(statuses=[503, 502, 200])
        try:
            self.configure(key, receiver.url)
            assert deliver_event(event.id) == "pending"
            delivery = WebhookDelivery.objects.get(event=event)
            assert delivery.attempts == 1 and delivery.state == "pending"
            first = WebhookAttempt.objects.get(number=1)
            assert 29 < (delivery.next_attempt_at - first.date_created).total_seconds() < 31
            assert sweep_deliveries(send=post)["attempts"] == 0  # not due yet
            assert deliver_event(event.id) == "pending"  # the message again: the slot is taken
            assert len(receiver.requests) == 1

            settings.RICLOUD_WEBHOOK_BACKOFF_SECONDS = 0.01
            WebhookDelivery.objects.filter(id=delivery.id).update(next_attempt_at=delivery.date_created)
            assert sweep_until_settled(event.id) == "delivered"
            event.refresh_from_db()
            assert event.state == "delivered" and event.retries == 2
            attempts = list(WebhookAttempt.objects.order_by("number").values_list("number", "status_code"))
            assert attempts == [(1, 503), (2, 502), (3, 200)]
            assert len(receiver.requests) == 3
            delivery.refresh_from_db()
            assert (delivery.attempts, delivery.next_attempt_at) == (3, None)
        finally:
            receiver.close()

    def test_attempts_are_inspectable(self, api, key, event, allow_private, settings, other_api):
        settings.RICLOUD_WEBHOOK_BACKOFF_SECONDS = 0.01
        receiver = Receiver(statuses=[503, 200])
        try:
            config = self.configure(key, receiver.url)
            assert deliver_event(event.id) == "pending"
            sweep_until_settled(event.id)
            body = api.get(f"/events/{event.id}/deliveries").json()
            (delivery,) = body["deliveries"]
            assert body["event"] == str(event.id) and delivery["webhook_config"] == config.id
            assert delivery["state"] == "delivered" and delivery["date_delivered"].endswith("Z")
            assert [(a["number"], a["status_code"]) for a in delivery["attempts"]] == [(1, 503), (2, 200)]
            assert delivery["attempts"][0]["url"] == f"{receiver.url}/{event.id}"
            assert other_api.get(f"/events/{event.id}/deliveries").status_code == 404
        finally:
            receiver.close()

    def test_4xx_is_not_retried(self, key, event, allow_private, settings):
        settings.RICLOUD_WEBHOOK_BACKOFF_SECONDS = 0.01
        receiver = Receiver(statuses=[410])
        try:
            self.configure(key, receiver.url)
            assert deliver_event(event.id) == "failed"
            time.sleep(0.05)
            sweep_deliveries(send=post)
            event.refresh_from_db()
            assert event.state == "failed" and event.date_delivered is None
            assert len(receiver.requests) == 1
        finally:
            receiver.close()

    def test_at_most_five_attempts(self, key, event, allow_private, settings):
        settings.RICLOUD_WEBHOOK_BACKOFF_SECONDS = 0.001
        receiver = Receiver(statuses=[500])
        try:
            self.configure(key, receiver.url)
            assert deliver_event(event.id) == "pending"
            assert sweep_until_settled(event.id) == "failed"
            sweep_deliveries(send=post)
            assert len(receiver.requests) == 5
            assert Event.objects.get(id=event.id).retries == 4
            assert list(WebhookAttempt.objects.order_by("number").values_list("number", "status_code")) == [
                (n, 500) for n in range(1, 6)]
        finally:
            receiver.close()

    def test_a_deactivated_config_gets_no_more_attempts(self, key, event, allow_private, settings):
        settings.RICLOUD_WEBHOOK_BACKOFF_SECONDS = 0.001
        receiver = Receiver(statuses=[500])
        try:
            config = self.configure(key, receiver.url)
            assert deliver_event(event.id) == "pending"
            WebhookConfig.objects.filter(id=config.id).update(state="deactivated")
            assert sweep_until_settled(event.id) == "failed"
            assert len(receiver.requests) == 1
            assert WebhookAttempt.objects.get(number=2).error == "refused: the webhook config was deactivated"
        finally:
            receiver.close()

    def test_a_private_target_is_refused_at_delivery_time(self, key, event):
        self.configure(key, "http://127.0.0.1:9/webhooks")
        assert deliver_event(event.id) == "failed"
        assert WebhookAttempt.objects.get().error.startswith("refused")

    def test_no_config_means_nothing_is_sent(self, event):
        assert deliver_event(event.id) == "no-target"


class TestEvents:
    def test_list_retrieve_and_filters(self, api, key, other_api):
        user = User.objects.create(organisation=key.organisation, key=key, identifier="u")
        session = create_session(key=key, user=user, source_type="mocks.mock", identifier="x", payload={})
        body = api.get("/events").json()
        assert [(e["type"], e["action"]) for e in body["data"]] == [("session", "created"), ("task", "created")]
        event = body["data"][0]
        assert set(event) == {"id", "resource", "type", "action", "data", "state", "retries", "date_created",
                              "date_delivered"}
        assert event["data"]["id"] == str(session.id) and event["data"]["resource"] == "session"
        assert api.get(f"/events/{event['id']}").json() == event
        assert [e["type"] for e in api.get("/events", {"type": "task"}).json()["data"]] == ["task"]
        assert api.get("/events", {"action": "created", "state": "pending"}).json()["total_count"] == 2
        assert_error(api.get("/events", {"state": "bogus"}), 400, "invalid-parameter")
        assert_error(other_api.get(f"/events/{event['id']}"), 404, "not-found")
