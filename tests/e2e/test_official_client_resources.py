"""The official client ricloud==3.2.0 on the rest of the resource set, with a real worker and a
real local webhook receiver verified by `ricloud.signing`."""
import json

import pytest
import requests
from ricloud.samples.utils import await_response
from ricloud.signing import Signature

from ..receiver import Receiver
from .conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def receiver(settings):
    settings.RICLOUD_WEBHOOK_ALLOW_PRIVATE = True
    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.fixture
def webhook_worker(start_worker):
    return start_worker(RICLOUD_WEBHOOK_ALLOW_PRIVATE=1)


def verified(request, secret):
    Signature.from_header(request["headers"]["Ricloud-Signature"]).verify(request["body"].decode(), secret, delta=600)
    return json.loads(request["body"])


def test_organisation_and_keys(ricloud_client, live_server, e2e_key):
    ricloud = ricloud_client
    organisation = ricloud.Organisation.retrieve()
    assert organisation.resource == "organisation" and organisation.permissions.resource == "permissions"
    assert isinstance(organisation.storage_configs, ricloud.resources.abase.List)
    organisation.update(name="Changed Organisation")
    assert organisation.name == "Changed Organisation" and organisation.slug == "changed-organisation"

    current = ricloud.Key.current()
    assert current.attrs["attrs"].id == e2e_key.id
    new_key = ricloud.Key.create(retrieval_protocol="asstore")
    assert new_key.token and new_key.retrieval_protocol == "asstore"
    assert {key.id for key in ricloud.Key.list()} == {e2e_key.id, new_key.id}
    assert ricloud.Key.retrieve(new_key.id).token is None

    rotated = requests.post(f"{live_server.url}/keys/{new_key.id}/rotate", headers={"Authorization": f"Token {new_key.token}"})
    assert rotated.status_code == 200 and rotated.json()["token"] not in (None, new_key.token)
    old = requests.get(f"{live_server.url}/key", headers={"Authorization": f"Token {new_key.token}"})
    assert old.status_code == 401
    fresh = requests.get(f"{live_server.url}/key", headers={"Authorization": f"Token {rotated.json()['token']}"})
    assert fresh.status_code == 200 and fresh.json()["id"] == new_key.id


def test_webhook_config_create_test_and_event_delivery(ricloud_client, receiver, webhook_worker):
    ricloud = ricloud_client
    config = ricloud.WebhookConfig.create(url=receiver.url)
    assert config.resource == "webhook_config" and config.secret
    wait_for(lambda: ricloud.WebhookConfig.retrieve(config.id).state == "valid")
    test_event = verified(receiver.requests[0], config.secret)
    assert (test_event["type"], test_event["action"]) == ("webhook_config", "test")

    task = ricloud.WebhookConfig.test_with_id(config.id).attrs["attrs"]
    assert task.type == "webhook_config.test" and task.target == str(config.id)
    wait_for(lambda: ricloud.Task.retrieve(task.id).state == "succeeded")

    ricloud.Organisation.retrieve().update(webhook_config_default=config.id)
    user = ricloud.User.create(identifier="hooks@example.com")
    session = ricloud.Session.create(source={"user": user, "type": "mocks.mock", "identifier": "hooks@example.com"},
                                     payload={"password": "x"})
    await_response(session)
    wanted = {("session", "created"), ("session", "active"), ("task", "created"), ("task", "succeeded")}

    def delivered():
        events = [verified(request, config.secret) for request in receiver.requests[2:]]
        return events if wanted <= {(e["type"], e["action"]) for e in events} else None

    events = wait_for(delivered)
    for request, event in zip(receiver.requests[2:], events, strict=True):
        assert request["path"] == f"/webhooks/{event['id']}"
    assert {e["data"]["id"] for e in events if e["type"] == "session"} == {session.id}
    listed = wait_for(lambda: [e for e in ricloud.Event.list(type="session", state="delivered")] or None)
    assert all(e.date_delivered and e.retries == 0 for e in listed)


def test_subscriptions_through_the_client(ricloud_client, worker):
    ricloud = ricloud_client
    user = ricloud.User.create(identifier="subs@example.com")
    session = ricloud.Session.create(source={"user": user, "type": "mocks.mock", "identifier": "subs@example.com"},
                                     payload={"password": "x"})
    await_response(session)
    subscription = ricloud.Subscription.create(session=session, poll_payload={"data_types": ["notes.notes"]},
                                               interval=3600)
    assert subscription.resource == "subscription" and subscription.state == "active"
    assert [s.id for s in ricloud.Subscription.list(session=session)] == [subscription.id]
    subscription.delete()
    assert subscription.state == "deleted"
