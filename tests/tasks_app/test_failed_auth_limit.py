"""Failed authentication is limited per client address: 429 with Retry-After in the path's
envelope once an address presented too many bad credentials; X-Forwarded-For only from trusted
proxies."""
import pytest
from django.test import RequestFactory

from tasks_app.ratelimit import client_address
from tests.conftest import Client

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_counters(settings):
    from tasks_app.notify import get_redis

    redis = get_redis()
    for name in redis.scan_iter("ricloud:rate:*"):
        redis.delete(name)
    settings.RICLOUD_RATE_LIMIT_FAILED_AUTH = "3/minute"
    settings.RICLOUD_TRUSTED_PROXIES = ""


def client(token: str | None, address: str = "198.51.100.7", **extra) -> Client:
    headers = {"REMOTE_ADDR": address, **extra}
    if token is not None:
        headers["HTTP_AUTHORIZATION"] = f"Token {token}"
    return Client(**headers)


def test_it_answers_429_in_the_v3_envelope_after_too_many_bad_tokens(key):
    bad = client("not-a-token")
    assert [bad.get("/tasks").status_code for _ in range(3)] == [401, 401, 401]
    response = bad.get("/tasks")
    assert response.status_code == 429
    body = response.json()
    assert body["error"] == "rate-limited" and body["message"].startswith("Too many failed authentication attempts")
    assert 0 < int(response["Retry-After"]) <= 60
    # The address is blocked, whatever it presents: its token is not even looked at.
    assert client(key.plaintext_token).get("/tasks").status_code == 429
    # Other addresses are not.
    assert client(key.plaintext_token, "198.51.100.8").get("/tasks").status_code == 200
    assert client("still-not-a-token", "198.51.100.8").get("/tasks").status_code == 401


def test_it_answers_429_in_the_v2_envelope(key):
    bad = client("not-a-token")
    assert [bad.post("/register-account/").status_code for _ in range(3)] == [401, 401, 401]
    response = bad.get("/account/")
    assert response.status_code == 429
    body = response.json()
    assert body["success"] is False and body["error"] == "rate-limited" and "retry in" in body["message"]
    assert 0 < int(response["Retry-After"]) <= 60


def test_v2_and_v3_failures_share_the_address_budget(key):
    bad = client("not-a-token")
    assert [bad.get("/tasks").status_code, bad.get("/account/").status_code, bad.get("/key").status_code] == [401] * 3
    assert bad.get("/account/").status_code == 429


def test_deactivated_keys_and_malformed_headers_count(key):
    key.state = "deactivated"
    key.save()
    assert client(key.plaintext_token).get("/key").status_code == 401
    assert Client(REMOTE_ADDR="198.51.100.7", HTTP_AUTHORIZATION="Basic dXNlcjpwdw==").get("/key").status_code == 401
    assert client("").get("/key").status_code == 401  # "Token " with nothing after it
    assert client("x").get("/key").status_code == 429


def test_requests_without_credentials_are_neither_counted_nor_limited(key):
    anonymous = client(None)
    assert all(anonymous.get("/account/").status_code == 401 for _ in range(10))
    assert client(key.plaintext_token).get("/account/").status_code == 200
    bad = client("not-a-token")
    assert [bad.get("/key").status_code for _ in range(4)] == [401, 401, 401, 429]
    assert anonymous.get("/key").status_code == 401  # still the plain 401


def test_valid_tokens_are_not_counted(api):
    assert all(api.get("/key").status_code == 200 for _ in range(10))


def test_it_is_off_when_unset(key, settings):
    settings.RICLOUD_RATE_LIMIT_FAILED_AUTH = ""
    bad = client("not-a-token")
    assert all(bad.get("/key").status_code == 401 for _ in range(10))


def test_x_forwarded_for_counts_only_from_trusted_proxies(key, settings):
    # Untrusted: a client cannot escape its limit by writing X-Forwarded-For.
    for n in range(4):
        response = client("bad", "203.0.113.5", HTTP_X_FORWARDED_FOR=f"192.0.2.{n}").get("/key")
    assert response.status_code == 429
    # Behind a trusted proxy, each forwarded client has its own budget.
    settings.RICLOUD_TRUSTED_PROXIES = "10.0.0.0/8"
    for _ in range(4):
        response = client("bad", "10.1.2.3", HTTP_X_FORWARDED_FOR="192.0.2.1").get("/key")
    assert response.status_code == 429
    assert client("bad", "10.1.2.3", HTTP_X_FORWARDED_FOR="192.0.2.2").get("/key").status_code == 401
    assert client(key.plaintext_token, "10.1.2.3", HTTP_X_FORWARDED_FOR="192.0.2.2").get("/key").status_code == 200


@pytest.mark.parametrize(("remote", "forwarded", "trusted", "expected"), [
    ("203.0.113.5", None, "", "203.0.113.5"),
    ("203.0.113.5", "192.0.2.1", "", "203.0.113.5"),
    ("10.0.0.1", "192.0.2.1", "10.0.0.0/8", "192.0.2.1"),
    # The client wrote the leftmost entry itself: only the hop the trusted proxy saw counts.
    ("10.0.0.1", "6.6.6.6, 192.0.2.1", "10.0.0.0/8", "192.0.2.1"),
    # Two trusted proxies in a row.
    ("10.0.0.1", "192.0.2.1, 10.0.0.2", "10.0.0.0/8", "192.0.2.1"),
    # Garbage: keep the last address a trusted proxy vouched for.
    ("10.0.0.1", "192.0.2.1, not-an-ip", "10.0.0.0/8", "10.0.0.1"),
    ("10.0.0.1", "", "10.0.0.1", "10.0.0.1"),
    # IPv6 per /64; IPv4-mapped as IPv4.
    ("2001:db8::1", None, "", "2001:db8::/64"),
    ("::ffff:192.0.2.9", None, "", "192.0.2.9"),
    ("", None, "", ""),
])
def test_client_address(settings, remote, forwarded, trusted, expected):
    settings.RICLOUD_TRUSTED_PROXIES = trusted
    meta = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        meta["HTTP_X_FORWARDED_FOR"] = forwarded
    assert client_address(RequestFactory().get("/", **meta).META) == expected


def test_a_redis_outage_lets_requests_through(key, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    bad = client("not-a-token")
    assert all(bad.get("/key").status_code == 401 for _ in range(5))
    assert client(key.plaintext_token).get("/key").status_code == 200
