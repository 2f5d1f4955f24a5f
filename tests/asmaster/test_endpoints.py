"""asmaster manager endpoints: every answer's shape and every error envelope (docs/DECISIONS.md 80-)."""
import json

import pytest

from asmaster_app import services
from asmaster_app.models import Account, Device
from tasks_app.models import Delivery, Task

from .conftest import run_pending

pytestmark = pytest.mark.django_db

ACCOUNT = "john.appleseed@reincubate.com"
TWO_FA = "2fa.user@example.com"

ACCOUNT_KEYS = {"account_id", "service", "username", "status", "error", "trusted_devices", "devices", "date_created"}
DEVICE_KEYS = {"device_id", "device_tag", "name", "model", "status", "since", "last_poll", "next_poll"}


def assert_error(response, field, code, status=400):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["success"] is False and isinstance(body["error"], str) and body["error"]
    assert [pair[1] for pair in body["errors"][field]] == [code]
    return body


def ok(response) -> dict:
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["success"] is True
    return body


def subscribe(am, username=ACCOUNT, password="joshua", service="iCloud"):
    return am.post("/subscribe-account/", {"service": service, "username": username, "password": password})


def active_account(am, username=ACCOUNT) -> dict:
    return ok(subscribe(am, username))["account"]


def stream_messages(key) -> list[tuple[dict, object]]:
    """(header, body) of the key's pending deliveries, as the stream would send them."""
    from asapi_app.stream import scan

    out = []
    for _, frames in scan(key.stream, set()):
        for frame in frames:
            size, rest = frame.split(b"\r\n", 1)
            head, rest = rest[:int(size) - 2], rest[int(size):]
            size, rest = rest.split(b"\r\n", 1)
            out.append((json.loads(head), rest[:int(size) - 2]))
    return out


class TestListServices:
    def test_services_actions_and_stream_endpoints(self, am, key):
        body = ok(am.post("/list-services/", HTTP_HOST="asmaster.example.com"))
        assert set(body) == {"success", "services", "stream_endpoints", "retrieval_protocol", "stream"}
        (icloud,) = body["services"]
        assert icloud["name"] == "iCloud" and all(isinstance(action["name"], str) for action in icloud["actions"])
        assert body["stream_endpoints"] == [{"host": "asmaster.example.com", "protocol": "http", "uri": "/stream/"}]
        assert body["stream"] == key.stream and body["retrieval_protocol"] == "aschannel"

    def test_it_needs_a_token(self, db):
        from django.test import Client

        response = Client().post("/list-services/")
        assert response.status_code == 401 and response.json()["success"] is False

    def test_other_methods_are_405_in_the_envelope(self, am):
        assert_error(am.get("/list-services/"), "__all__", "method_not_allowed", 405)
        assert_error(am.get("/list-devices/"), "__all__", "method_not_allowed", 405)


class TestSubscribeAccount:
    def test_an_account_logs_in_and_lists_its_devices(self, am):
        body = ok(subscribe(am))
        account = body["account"]
        assert set(account) == ACCOUNT_KEYS and body["account_id"] == account["account_id"]
        assert isinstance(account["account_id"], int)
        assert (account["status"], account["error"], account["service"]) == ("active", None, "icloud")
        assert len(account["devices"]) == 4
        for device in account["devices"]:
            assert set(device) == DEVICE_KEYS and isinstance(device["device_id"], int)
            assert device["status"] == "available" and device["since"] is None and device["next_poll"] is None

    def test_missing_and_invalid_parameters(self, am):
        assert_error(am.post("/subscribe-account/", {"service": "icloud", "username": ACCOUNT}), "password", "missing-param")
        assert_error(am.post("/subscribe-account/", {"service": "icloud", "password": "x"}), "username", "missing-param")
        assert_error(subscribe(am, service="nope"), "service", "invalid_service")

    def test_subscribing_twice_is_refused_with_the_account(self, am):
        first = active_account(am)
        body = assert_error(subscribe(am), "__all__", "already_subscribed")
        assert f"account_id {first['account_id']}," in body["error"]
        assert set(body) == {"success", "error", "errors"}

    @pytest.mark.parametrize("username, password, code", [("locked.user@example.com", "x", "source-locked"),
                                                           (ACCOUNT, "wrong-password", "invalid-credentials")])
    def test_a_failed_log_in_is_an_error_and_the_account_is_failed(self, am, username, password, code):
        body = assert_error(subscribe(am, username, password), "__all__", code)
        assert set(body) == {"success", "error", "errors"} and "status failed" in body["error"]
        listed = ok(am.post("/list-subscriptions/", {"service": "icloud"}))["accounts"]
        assert [(a["username"], a["status"]) for a in listed] == [(username, "failed")]

    def test_an_account_registered_through_the_asapi_is_the_same_source(self, am):
        am.post("/register-account/", {"service": "icloud", "username": ACCOUNT})
        account = active_account(am)
        assert Account.objects.get(id=account["account_id"]).source.identifier == ACCOUNT


class TestTwoFactor:
    def test_challenge_then_code(self, am):
        account = ok(subscribe(am, TWO_FA))["account"]
        assert account["status"] == "2fa-required" and account["devices"] == []
        assert [d["device_id"] for d in account["trusted_devices"]] == list(range(len(account["trusted_devices"])))
        account_id = account["account_id"]
        body = ok(am.post("/perform-2fa-challenge/", {"account_id": account_id, "device_id": 0}))
        assert body["message"].startswith("Challenge sent to ") and body["account"]["status"] == "2fa-required"
        assert_error(am.post("/submit-2fa-challenge/", {"account_id": account_id, "code": "000000"}),
                     "__all__", "code-invalid")
        body = ok(am.post("/submit-2fa-challenge/", {"account_id": account_id, "code": "123456"}))
        assert body["account"]["status"] == "active" and body["account"]["devices"]

    def test_errors(self, am):
        account_id = ok(subscribe(am, TWO_FA))["account_id"]
        for value in (9, -1, "x", 2**40):
            assert_error(am.post("/perform-2fa-challenge/", {"account_id": account_id, "device_id": value}),
                         "device_id", "invalid")
        assert_error(am.post("/perform-2fa-challenge/", {"account_id": account_id}), "device_id", "missing-param")
        assert_error(am.post("/submit-2fa-challenge/", {"account_id": account_id}), "code", "missing-param")
        active_id = active_account(am)["account_id"]
        assert_error(am.post("/submit-2fa-challenge/", {"account_id": active_id, "code": "123456"}),
                     "account_id", "2fa_not_required")
        assert_error(am.post("/perform-2fa-challenge/", {"account_id": active_id, "device_id": 0}),
                     "account_id", "2fa_not_required")
        assert_error(am.post("/list-devices/", {"account_id": account_id}), "account_id", "account_not_active")


class TestAccountIds:
    @pytest.mark.parametrize("path", ["/list-devices/", "/unsubscribe-account/", "/subscribe-device/",
                                      "/unsubscribe-device/", "/resubscribe-account/", "/reset-subscription-since/",
                                      "/perform-2fa-challenge/", "/submit-2fa-challenge/"])
    def test_missing_unknown_and_other_keys_accounts(self, am, other_api, path):
        from tests.asapi_app.conftest import v2_client

        assert_error(am.post(path, {}), "account_id", "missing-param")
        for value in ("abc", "0", "-1", str(2**31), "1e3"):
            assert_error(am.post(path, {"account_id": value}), "account_id", "invalid")
        assert_error(am.post(path, {"account_id": 999999}), "account_id", "no_such_account")
        account_id = active_account(v2_client(other_api.key))["account_id"]
        assert_error(am.post(path, {"account_id": account_id}), "account_id", "no_such_account")


class TestDevices:
    def test_list_subscribe_poll_unsubscribe(self, am, key):
        account = active_account(am)
        account_id = account["account_id"]
        devices = ok(am.post("/list-devices/", {"account_id": account_id}))
        assert set(devices) == {"success", "account_id", "devices"}
        assert [d["device_id"] for d in devices["devices"]] == [d["device_id"] for d in account["devices"]]
        device = devices["devices"][0]

        body = ok(am.post("/subscribe-device/", {"account_id": account_id, "device_id": device["device_id"]}))
        assert set(body) == {"success", "account_id", "device"}
        assert body["device"]["status"] == "subscribed" and body["device"]["last_poll"] and body["device"]["since"]
        assert_error(am.post("/subscribe-device/", {"account_id": account_id, "device_id": device["device_id"]}),
                     "device_id", "already_subscribed")
        poll = Task.objects.get(id=Device.objects.get(id=device["device_id"]).last_task)
        assert poll.type == "fetch-data" and poll.api_version == 2 and "since" not in poll.payload

        run_pending()
        assert services.run_due()["files"] == services.files_per_poll()
        run_pending()
        messages = stream_messages(key)
        kinds = [header["type"] for header, _ in messages]
        assert kinds.count("fetch-data") == 1 and kinds.count("download-file") == services.files_per_poll()
        assert "message" in kinds and "log-in" not in kinds and "list-devices" not in kinds
        for header, _ in messages:
            assert header["service"] == "iCloud" and header["account_id"] == account_id
            if header["type"] != "message":
                assert header["device_id"] == device["device_id"] and header["device_tag"] == device["device_tag"]
        feed = json.loads(next(body for header, body in messages if header["type"] == "fetch-data"))
        assert {"photos", "sms", "contacts"} <= set(feed)
        file_headers = [header for header, _ in messages if header["type"] == "download-file"]
        assert all(header["file_id"] for header in file_headers)

        body = ok(am.post("/unsubscribe-device/", {"account_id": account_id, "device_id": device["device_id"]}))
        assert body["device"]["status"] == "unsubscribed" and body["device"]["next_poll"] is None
        assert_error(am.post("/unsubscribe-device/", {"account_id": account_id, "device_id": device["device_id"]}),
                     "device_id", "not_subscribed")

    def test_device_errors(self, am):
        account_id = active_account(am)["account_id"]
        assert_error(am.post("/subscribe-device/", {"account_id": account_id}), "device_id", "missing-param")
        for value in ("x", 0, 2**31):
            assert_error(am.post("/subscribe-device/", {"account_id": account_id, "device_id": value}),
                         "device_id", "invalid")
        assert_error(am.post("/subscribe-device/", {"account_id": account_id, "device_id": 999999}),
                     "device_id", "no_such_device")

    def test_device_ids_are_stable_across_listings(self, am):
        account = active_account(am)
        again = ok(am.post("/list-devices/", {"account_id": account["account_id"]}))["devices"]
        assert [(d["device_id"], d["device_tag"]) for d in again] == [
            (d["device_id"], d["device_tag"]) for d in account["devices"]]

    def test_a_due_device_is_polled_again_for_what_is_new(self, am):
        from datetime import timedelta

        from django.utils import timezone

        account = active_account(am)
        device_id = account["devices"][1]["device_id"]
        ok(am.post("/subscribe-device/", {"account_id": account["account_id"], "device_id": device_id}))
        run_pending()
        first = Device.objects.get(id=device_id)
        assert services.run_due()["polled"] == 0  # not due for an interval
        assert services.run_due(now=timezone.now() + timedelta(seconds=services.poll_interval() + 1))["polled"] == 1
        second = Task.objects.get(id=Device.objects.get(id=device_id).last_task)
        assert second.id != first.last_task and second.payload["since"] == first.since.isoformat()


class TestResetAndUnsubscribe:
    def test_reset_subscription_since(self, am):
        account = active_account(am)
        device_id = account["devices"][0]["device_id"]
        ok(am.post("/subscribe-device/", {"account_id": account["account_id"], "device_id": device_id}))
        body = ok(am.post("/reset-subscription-since/", {"account_id": account["account_id"],
                                                         "datetime": "2024-05-01 10:00:00"}))
        assert set(body) == {"success", "account_id", "account"}
        poll = Task.objects.get(id=Device.objects.get(id=device_id).last_task)
        assert poll.payload["since"] == "2024-05-01T10:00:00+00:00"
        assert_error(am.post("/reset-subscription-since/", {"account_id": account["account_id"], "datetime": "soon"}),
                     "datetime", "invalid")
        assert_error(am.post("/reset-subscription-since/", {"account_id": account["account_id"]}),
                     "datetime", "missing-param")

    def test_unsubscribe_then_resubscribe_keeps_the_ids(self, am):
        account = active_account(am)
        account_id, device_id = account["account_id"], account["devices"][0]["device_id"]
        ok(am.post("/subscribe-device/", {"account_id": account_id, "device_id": device_id}))
        body = ok(am.post("/unsubscribe-account/", {"account_id": account_id}))
        assert body["account"]["status"] == "unsubscribed"
        assert {d["status"] for d in body["account"]["devices"]} <= {"available", "unsubscribed"}
        assert_error(am.post("/unsubscribe-account/", {"account_id": account_id}), "account_id", "not_subscribed")
        assert_error(am.post("/list-devices/", {"account_id": account_id}), "account_id", "account_not_active")
        again = ok(am.post("/resubscribe-account/", {"account_id": account_id, "password": "joshua"}))["account"]
        assert again["account_id"] == account_id and again["status"] == "active"
        assert device_id in [d["device_id"] for d in again["devices"]]
        assert_error(subscribe(am), "__all__", "already_subscribed")

    def test_resubscribe_after_a_failed_log_in(self, am):
        body = assert_error(subscribe(am, password="wrong-password"), "__all__", "invalid-credentials")
        account_id = int(body["error"].split("account_id ")[1].split(",")[0])
        assert_error(am.post("/resubscribe-account/", {"account_id": account_id}), "password", "missing-param")
        assert ok(am.post("/resubscribe-account/", {"account_id": account_id, "password": "joshua"}))[
            "account"]["status"] == "active"


class TestListSubscriptions:
    def test_accounts_with_devices_states_and_since(self, am):
        account = active_account(am)
        ok(am.post("/subscribe-device/", {"account_id": account["account_id"],
                                          "device_id": account["devices"][0]["device_id"]}))
        body = ok(am.post("/list-subscriptions/", {"service": "iCloud"}))
        assert set(body) == {"success", "service", "accounts", "subscribed"}
        (listed,) = body["accounts"]
        assert set(listed) == ACCOUNT_KEYS and body["subscribed"] == 1
        assert [d["status"] for d in listed["devices"]] == ["subscribed", "available", "available", "available"]
        assert listed["devices"][0]["since"]
        assert_error(am.post("/list-subscriptions/", {}), "service", "invalid_service")

    def test_a_step_still_running_is_settled_later(self, am, monkeypatch):
        monkeypatch.setattr("asmaster_app.services.wait_until", lambda channels, settled, timeout: settled())
        body = ok(subscribe(am))
        assert body["account"]["status"] == "pending"
        run_pending()
        (listed,) = ok(am.post("/list-subscriptions/", {"service": "icloud"}))["accounts"]
        assert listed["status"] == "active"
        run_pending()
        services.run_due()
        assert len(ok(am.post("/list-subscriptions/", {"service": "icloud"}))["accounts"][0]["devices"]) == 4


def test_control_steps_never_reach_the_stream(am, key):
    active_account(am)
    types = set(Delivery.objects.filter(stream=key.stream).values_list("task__type", flat=True))
    assert types <= {"message"}


def test_message_bodies(am, key):
    account = active_account(am)
    run_pending()
    (header, body), *_ = [m for m in stream_messages(key) if m[0]["type"] == "message"]
    body = json.loads(body)
    assert body["code"] == "account-active" and body["account_id"] == account["account_id"]
    assert header["account_id"] == account["account_id"] and header["device_id"] is None
