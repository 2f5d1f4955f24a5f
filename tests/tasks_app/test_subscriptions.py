"""Subscriptions: creation, the beat that creates their polls, deletion (API.md §2.7)."""
from datetime import timedelta

import pytest
from django.utils import timezone

from tasks_app.models import Poll, Subscription, Task, User
from tasks_app.services.sessions import create_session
from tasks_app.services.subscriptions import run_due_subscriptions
from workers.runner import run

pytestmark = pytest.mark.django_db


@pytest.fixture
def session(key):
    user = User.objects.create(organisation=key.organisation, key=key, identifier="u")
    return create_session(key=key, user=user, source_type="mocks.mock", identifier="sub@example.com", payload={})


@pytest.fixture
def active_session(session):
    run(Task.objects.get(session=session).id, max_attempts=5)
    session.refresh_from_db()
    return session


def create(api, session, **extra):
    body = {"session": str(session.id), "poll_payload": {"data_types": ["ios_messages.messages"]}, "interval": 3600, **extra}
    return api.post_json("/subscriptions", body)


def assert_error(response, status, code):
    assert response.status_code == status, response.content
    assert response.json()["error"] == code
    return response.json()


def test_create_on_an_active_session(api, active_session):
    response = create(api, active_session)
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "resource", "org", "source", "session", "poll_payload", "interval", "date_start",
                         "date_end", "state", "date_created"}
    assert body["resource"] == "subscription" and body["state"] == "active" and body["org"] == active_session.organisation_id
    assert body["session"] == str(active_session.id) and body["source"] == active_session.source_id


def test_beat_creates_polls_on_schedule(api, active_session):
    subscription = create(api, active_session).json()
    assert run_due_subscriptions() == 1
    assert run_due_subscriptions() == 0  # not due again for an hour
    poll = Poll.objects.get(subscription_id=subscription["id"])
    assert poll.requestor == "subscription" and poll.tasks.get().target == "ios_messages.messages"
    Subscription.objects.filter(id=subscription["id"]).update(date_next_poll=timezone.now() - timedelta(seconds=1))
    assert run_due_subscriptions() == 1
    listed = api.get("/polls", {"subscription": subscription["id"], "requestor": "subscription", "limit": 1}).json()
    assert listed["total_count"] == 2 and listed["data"][0]["subscription"] == subscription["id"]
    assert listed["data"][0]["requestor"] == "subscription"


def test_a_subscription_waits_for_its_session(api, session):
    subscription = create(api, session).json()
    assert subscription["state"] == "pending"
    assert run_due_subscriptions() == 0
    run(Task.objects.get(session=session).id, max_attempts=5)
    assert api.get(f"/subscriptions/{subscription['id']}").json()["state"] == "active"
    assert run_due_subscriptions() == 1


def test_delete_and_date_end_stop_it(api, active_session):
    first = create(api, active_session).json()
    response = api.delete(f"/subscriptions/{first['id']}")
    assert response.status_code == 200 and response.json()["state"] == "deleted"
    soon = timezone.now() + timedelta(hours=1)
    second = create(api, active_session, date_end=soon.isoformat()).json()
    Subscription.objects.filter(id=second["id"]).update(date_end=timezone.now() - timedelta(seconds=1))
    assert run_due_subscriptions() == 0
    assert api.get(f"/subscriptions/{second['id']}").json()["state"] == "deleted"


def test_a_manual_poll_against_a_subscription(api, active_session):
    subscription = create(api, active_session).json()
    response = api.post_json("/polls", {"subscription": subscription["id"], "payload": {"info_types": ["*"]}})
    assert response.status_code == 201
    body = response.json()
    assert body["subscription"] == subscription["id"] and body["session"] == str(active_session.id)
    assert body["requestor"] == "api"


@pytest.mark.parametrize("extra, field", [
    ({"poll_payload": {"data_types": ["nope"]}}, "payload"),
    ({"poll_payload": {}}, "payload"),
    ({"interval": 5}, "interval"),
    ({"interval": "hourly"}, "interval"),
    ({"date_start": "2030-01-02T00:00:00Z", "date_end": "2030-01-01T00:00:00Z"}, "date_end"),
])
def test_validation(api, active_session, extra, field):
    body = assert_error(create(api, active_session, **extra), 400, "invalid-parameter")
    assert field in body["params"]


def test_isolation(api, other_api, active_session):
    subscription = create(api, active_session).json()
    assert_error(other_api.get(f"/subscriptions/{subscription['id']}"), 404, "not-found")
    assert_error(other_api.delete(f"/subscriptions/{subscription['id']}"), 404, "not-found")
    assert_error(create(other_api, active_session), 400, "invalid-parameter")
    assert_error(other_api.post_json("/polls", {"subscription": subscription["id"], "payload": {"info_types": ["*"]}}),
                 400, "invalid-parameter")
