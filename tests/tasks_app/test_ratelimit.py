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
