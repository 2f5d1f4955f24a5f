"""Rate limiting per organisation and key: 429 with the envelope and Retry-After."""
import pytest

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_counters():
    from tasks_app.notify import get_redis

    redis = get_redis()
    for name in redis.scan_iter("ricloud:rate:*"):
        redis.delete(name)


def test_the_organisation_limit(api, other_api, settings):
    settings.RICLOUD_RATE_LIMIT_ORGANISATION = "3/hour"
    assert [api.get("/tasks").status_code for _ in range(3)] == [200, 200, 200]
    response = api.get("/tasks")
    assert response.status_code == 429
    assert response.json()["error"] == "rate-limited" and response.json()["message"]
    assert 0 < int(response["Retry-After"]) <= 3600
    assert other_api.get("/tasks").status_code == 200  # another organisation has its own budget


def test_the_key_limit_and_v2(api, key, settings):
    settings.RICLOUD_RATE_LIMIT_ORGANISATION = ""
    settings.RICLOUD_RATE_LIMIT_KEY = "2/minute"
    assert api.get("/key").status_code == 200
    assert api.get("/account/").status_code == 200
    response = api.get("/account/")
    assert response.status_code == 429 and response.json()["success"] is False
    assert 0 < int(response["Retry-After"]) <= 60


def test_unlimited_when_unset(api, settings):
    settings.RICLOUD_RATE_LIMIT_ORGANISATION = ""
    settings.RICLOUD_RATE_LIMIT_KEY = "0/hour"
    assert all(api.get("/tasks").status_code == 200 for _ in range(20))


def test_refused_requests_do_not_use_up_the_organisation_s_budget(api, key, settings):
    from rest_framework.test import APIClient

    from tasks_app.services.organisations import create_key

    settings.RICLOUD_RATE_LIMIT_ORGANISATION = "5/hour"
    settings.RICLOUD_RATE_LIMIT_KEY = "2/hour"
    assert [api.get("/key").status_code for _ in range(12)] == [200, 200] + [429] * 10
    second = APIClient()
    second.credentials(HTTP_AUTHORIZATION=f"Token {create_key(organisation=key.organisation).plaintext_token}")
    # 2 admitted so far: the organisation has 3 left, the second key 2 of them.
    assert [second.get("/key").status_code for _ in range(3)] == [200, 200, 429]


def test_the_429_message_says_the_wait_once(api, settings):
    settings.RICLOUD_RATE_LIMIT_ORGANISATION = "1/hour"
    api.get("/key")
    message = api.get("/key").json()["message"]
    assert message.count("seconds") == 1 and message.startswith("Rate limit exceeded."), message
