"""Code written against ricloud, tested against a real ricloud-server started by its pytest plugin.

    pip install "ricloud-server[embedded]" pytest && pip install --no-deps ricloud==3.2.0
    cp tests/examples/ricloud_client_example.py test_with_ricloud_server.py
    pytest test_with_ricloud_server.py

It lives among the tests (it is test code, and imports the official client, which is no
requirement of the server: its click<8 pin conflicts with Celery's), under a name this suite does
not collect: tests/install/test_package.py runs it from a fresh install of the package.
"""
import ricloud


def test_a_session_and_a_poll(ricloud_server):
    ricloud_server.configure(ricloud, await_for=10)  # the official client, pointed at the server
    user = ricloud.User.create(identifier="testing@example.com")
    session = ricloud.Session.create(
        source={"user": user, "type": "mocks.mock", "identifier": "john.appleseed@reincubate.com"},
        payload={"password": "abcd1234"},
    )
    assert session.state == "active"
    poll = ricloud.Poll.create(session=session, payload={"info_types": ["*"]})
    assert poll.state == "completed"
    assert sorted(result.identifier for result in poll.results) == ["account.devices", "account.info"]


def test_each_test_starts_from_a_reset_server(ricloud_server):
    ricloud_server.configure(ricloud, await_for=10)
    ricloud.User.create(identifier="second@example.com")
    # The first test's user is gone: the fixture resets the server between the tests that use it.
    assert [user.identifier for user in ricloud.User.list()] == ["second@example.com"]
