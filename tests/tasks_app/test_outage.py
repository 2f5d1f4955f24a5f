"""Postgres unreachable (nothing listens where it was): 503 with Retry-After in the envelope, and
the next request after it is back succeeds by itself."""

import pytest
from django.db import connection, connections

from tasks_app.models import User
from tests.asapi_app.conftest import v2_client
from tests.servers import free_port

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="a database server to be unreachable"),
]


@pytest.fixture
def outage():
    connection = connections["default"]
    saved = dict(connection.settings_dict)

    class Outage:
        @staticmethod
        def start():
            connection.close()
            connection.settings_dict.update(HOST="127.0.0.1", PORT=free_port())

        @staticmethod
        def end():
            connection.close()
            connection.settings_dict.update(HOST=saved["HOST"], PORT=saved["PORT"])

    yield Outage
    Outage.end()


def test_v3_and_v2_answer_503_while_postgres_is_down_and_recover(api, key, outage):
    User.objects.create(organisation=key.organisation, key=key, identifier="before")
    v2 = v2_client(key)
    assert api.get("/users").status_code == 200
    assert v2.post("/register-account/", {"service": "iCloud", "username": "a@example.com"}).status_code == 200
    outage.start()
    response = api.get("/users")
    assert response.status_code == 503, response.content
    assert response.json()["error"] == "service-unavailable" and int(response["Retry-After"]) > 0
    response = v2.post("/register-account/", {"service": "iCloud", "username": "b@example.com"})
    assert response.status_code == 503, response.content
    body = response.json()
    assert body["success"] is False and body["errors"]["__all__"][0][1] == "service_unavailable"
    assert int(response["Retry-After"]) > 0


def test_the_next_request_after_the_outage_succeeds(api, key, outage):
    outage.start()
    assert api.get("/users").status_code == 503
    outage.end()  # Postgres is back where it was: nothing to restart, the next request reconnects
    assert api.get("/users").status_code == 200
