"""Inputs that reached the database or the calendar's edges: a 4xx in the envelope, or a right answer."""
import pytest

from tasks_app.models import Task, User
from tasks_app.services.sessions import create_session
from tests.tasks_app.test_conventions import assert_error

pytestmark = pytest.mark.django_db

LISTS = ["/users", "/sources", "/sessions", "/polls", "/tasks", "/results", "/events", "/subscriptions"]


@pytest.fixture
def some_tasks(key):
    user = User.objects.create(organisation=key.organisation, key=key, identifier="edge")
    create_session(key=key, user=user, source_type="mocks.mock", identifier="edge@example.com", payload={})
    return Task.objects.filter(organisation_id=key.organisation_id).count()


@pytest.mark.parametrize("path", LISTS)
@pytest.mark.parametrize("value", ["2026-01-01T00:00:00+23:59", "2026-01-01T00:00:00-23:59"])
def test_any_offset_the_format_allows_is_read_in_utc(api, path, value):
    response = api.get(path, {"date_created__lt": value})
    assert response.status_code == 200, response.content


@pytest.mark.parametrize("params", [{"date_created__gte": "0001-01-01T00:00:00Z"},
                                    {"date_created__lt": "9999-12-31T23:59:59Z"},
                                    {"date_created__lte": "9999-12-31T23:59:59Z", "date_created__gt": "0001-01-01T00:00:00Z"},
                                    {"date_created__gte": "1969-12-31T00:00:00Z"}])
def test_bounds_at_the_edges_of_the_calendar_list_everything(api, some_tasks, params):
    body = api.get("/tasks", params).json()
    assert body["total_count"] == len(body["data"]) == some_tasks > 0


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_an_offset_that_leaves_the_calendar_is_a_400(api, value):
    body = assert_error(api.get("/tasks", {"date_created__gte": value}), 400, "invalid-parameter")
    assert "date_created__gte" in str(body)


@pytest.mark.parametrize("raw", ["+{id}", "%20{id}", "{id}%20", "{id}.0", "-{id}"])
def test_only_plain_digits_name_an_integer_resource(api, key, raw):
    user = User.objects.create(organisation=key.organisation, key=key, identifier="digits")
    assert api.get(f"/users/{user.id}").status_code == 200
    assert_error(api.get("/users/" + raw.format(id=user.id)), 404, "not-found")


def test_a_body_over_the_limit_is_a_413_without_being_read_whole(api, settings):
    settings.RICLOUD_MAX_BODY_BYTES = 1000
    big = '{"identifier": "' + "x" * 5000 + '"}'
    body = assert_error(api.generic("POST", "/users", big, content_type="application/json"), 413, "request-too-large")
    assert "1000 bytes" in body["message"]
    assert api.generic("POST", "/users", '{"identifier": "small"}', content_type="application/json").status_code == 201
