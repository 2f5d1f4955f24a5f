"""API.md §2.8 / seed page 000: GET /tasks/{id} and GET /tasks with exactly the documented filters."""
import uuid
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from tasks_app.filters import TaskFilterSet
from tasks_app.ids import uuid7_at
from tasks_app.models import Task, User
from tasks_app.services.organisations import create_key
from tasks_app.services.polls import create_poll
from tasks_app.services.sessions import create_session
from tests.tasks_app.test_conventions import assert_error
from workers.runner import run

pytestmark = pytest.mark.django_db

# The attribute table of the tasks page, in its order.
TASK_ATTRIBUTES = [
    "id", "resource", "organisation", "key", "user", "source", "session", "poll", "source_type", "type", "target",
    "state", "results", "error", "date_created", "date_started", "date_completed",
]
# The parameter table of the tasks page; "datetime filter" rows take the comparison suffixes.
DOCUMENTED_FILTERS = ["key", "user", "source", "session", "poll", "source_type", "type", "state"]
DATETIME_FILTERS = ["date_created", "date_started", "date_completed"]
SUFFIXES = ["", "__gt", "__gte", "__lt", "__lte"]


@pytest.fixture(autouse=True)
def storage(settings, tmp_path):
    settings.RICLOUD_STORAGE_URL = f"local://{tmp_path}"
    return tmp_path


def run_task(task):
    return run(task.id, max_attempts=5)


def ids(response):
    assert response.status_code == 200, response.content
    return [item["id"] for item in response.json()["data"]]


def at(hour, minute=0):
    return datetime(2024, 1, 1, hour, minute, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "name", DOCUMENTED_FILTERS + [f"{name}{suffix}" for name in DATETIME_FILTERS for suffix in SUFFIXES]
)
def test_every_documented_parameter_is_a_filter(name):
    assert name in TaskFilterSet.base_filters


def test_there_are_no_undocumented_filters():
    expected = set(DOCUMENTED_FILTERS) | {f"{name}{suffix}" for name in DATETIME_FILTERS for suffix in SUFFIXES}
    assert set(TaskFilterSet.base_filters) == expected
    assert len(expected) == 8 + 3 * 5


@pytest.fixture
def world(key):
    """Two keys, users, sessions (one per source type) and polls, with tasks in several states.

    key 1 / alice / mocks.mock     : init1 (succeeded), poll1 → info1 (succeeded), sms1 (failed)
    key 2 / bob   / icloud.account : init2 (pending),   poll2 → photos2 (pending, waits for init2)
    """
    key2 = create_key(organisation=key.organisation)
    alice = User.objects.create(organisation=key.organisation, key=key, identifier="alice")
    bob = User.objects.create(organisation=key.organisation, key=key2, identifier="bob")
    s1 = create_session(key=key, user=alice, source_type="mocks.mock", identifier="a@example.com", payload={"password": "x"})
    s2 = create_session(key=key2, user=bob, source_type="icloud.account", identifier="b@example.com", payload={"password": "x"})
    init1, init2 = (Task.objects.get(session=s, type="session.init") for s in (s1, s2))
    assert run_task(init1) == "succeeded"
    p1 = create_poll(key=key, session=s1, source=None, payload={"info_types": ["account.info"], "data_types": ["messages.sms"],
                                                                "mock": {"fail": ["messages.sms"]}})
    p2 = create_poll(key=key2, session=s2, source=None, payload={"data_types": ["photos"]})
    info1, sms1 = p1.tasks.get(type="info"), p1.tasks.get(type="data")
    photos2 = p2.tasks.get()
    assert run_task(info1) == "succeeded" and run_task(sms1) == "failed"
    tasks = {"init1": init1, "init2": init2, "info1": info1, "sms1": sms1, "photos2": photos2}
    return SimpleNamespace(
        key1=key, key2=key2, alice=alice, bob=bob, s1=s1, s2=s2, p1=p1, p2=p2,
        ids={name: str(task.id) for name, task in tasks.items()},
    )


class TestRetrieve:
    def test_it_renders_every_attribute_of_the_tasks_page(self, api, key, world):
        task = Task.objects.get(id=world.ids["info1"])
        response = api.get(f"/tasks/{task.id}")
        assert response.status_code == 200
        body = response.json()
        assert list(body) == TASK_ATTRIBUTES
        (result,) = body["results"]["data"]
        assert body == {
            "id": str(task.id),
            "resource": "task",
            "organisation": key.organisation_id,
            "key": key.id,
            "user": world.alice.id,
            "source": world.s1.source_id,
            "session": str(world.s1.id),
            "poll": str(world.p1.id),
            "source_type": "mocks.mock",
            "type": "info",
            "target": "account.info",
            "state": "succeeded",
            "results": {"resource": "list", "data": [result], "has_more": False, "total_count": 1,
                        "url": f"/results?task={task.id}"},
            "error": None,
            "date_created": body["date_created"],
            "date_started": body["date_started"],
            "date_completed": body["date_completed"],
        }
        assert result["resource"] == "result" and result["task"] == str(task.id) and result["identifier"] == "account.info"
        assert body["date_created"] <= body["date_started"] <= body["date_completed"]
        assert all(body[name].endswith("Z") for name in ("date_created", "date_started", "date_completed"))

    def test_a_failed_task_has_its_error(self, api, world):
        body = api.get(f"/tasks/{world.ids['sms1']}").json()
        assert (body["type"], body["target"], body["state"], body["error"]) == ("data", "messages.sms", "failed", "mock-failure")
        assert body["results"]["data"] == [] and body["results"]["total_count"] == 0
        assert body["date_started"] is not None and body["date_completed"] is not None

    def test_a_pending_task_has_no_dates_but_its_creation(self, api, world):
        body = api.get(f"/tasks/{world.ids['photos2']}").json()
        assert (body["state"], body["error"], body["date_started"], body["date_completed"]) == ("pending", None, None, None)
        assert body["source_type"] == "icloud.account" and body["key"] == world.key2.id

    def test_a_session_init_task_has_no_poll_and_no_target(self, api, world):
        body = api.get(f"/tasks/{world.ids['init2']}").json()
        assert (body["type"], body["target"], body["poll"], body["session"]) == ("session.init", None, None, str(world.s2.id))

    def test_a_task_of_another_organisation_is_404(self, other_api, world):
        assert_error(other_api.get(f"/tasks/{world.ids['info1']}"), 404, "not-found")

    def test_an_unknown_task_is_404(self, api, world):
        assert_error(api.get(f"/tasks/{uuid.uuid4()}"), 404, "not-found")

    def test_tasks_cannot_be_updated_or_deleted_nor_engine_tasks_created(self, api, world):
        # POST /tasks makes info, data and file tasks only (test_client_writes.py).
        body = assert_error(api.post_json("/tasks", {"type": "session.init"}), 400, "invalid-parameter")
        assert set(body["params"]) == {"session", "type", "target"}
        assert_error(api.post_json(f"/tasks/{world.ids['init2']}", {"state": "succeeded"}), 405, "method-not-allowed")
        assert_error(api.delete(f"/tasks/{world.ids['init2']}"), 405, "method-not-allowed")
        assert Task.objects.count() == 5 and Task.objects.get(id=world.ids["init2"]).state == "pending"


class TestList:
    def test_it_lists_newest_first(self, api, world):
        body = api.get("/tasks").json()
        assert [item["id"] for item in body["data"]] == [world.ids[n] for n in ("photos2", "sms1", "info1", "init2", "init1")]
        assert body["total_count"] == 5 and body["url"] == "/tasks" and body["has_more"] is False
        assert all(list(item) == TASK_ATTRIBUTES for item in body["data"])

    @pytest.mark.parametrize(
        "params, expected",
        [
            (lambda w: {"key": w.key1.id}, ["sms1", "info1", "init1"]),
            (lambda w: {"key": w.key2.id}, ["photos2", "init2"]),
            (lambda w: {"user": w.alice.id}, ["sms1", "info1", "init1"]),
            (lambda w: {"user": w.bob.id}, ["photos2", "init2"]),
            (lambda w: {"source": w.s1.source_id}, ["sms1", "info1", "init1"]),
            (lambda w: {"source": w.s2.source_id}, ["photos2", "init2"]),
            (lambda w: {"session": str(w.s1.id)}, ["sms1", "info1", "init1"]),
            (lambda w: {"session": str(w.s2.id)}, ["photos2", "init2"]),
            (lambda w: {"poll": str(w.p1.id)}, ["sms1", "info1"]),
            (lambda w: {"poll": str(w.p2.id)}, ["photos2"]),
            (lambda w: {"source_type": "icloud.account"}, ["photos2", "init2"]),
            (lambda w: {"source_type": "mocks.mock"}, ["sms1", "info1", "init1"]),
            (lambda w: {"source_type": "mocks"}, []),
            (lambda w: {"type": "session.init"}, ["init2", "init1"]),
            (lambda w: {"type": "data"}, ["photos2", "sms1"]),
            (lambda w: {"type": "info"}, ["info1"]),
            (lambda w: {"state": "succeeded"}, ["info1", "init1"]),
            (lambda w: {"state": "failed"}, ["sms1"]),
            (lambda w: {"state": "pending"}, ["photos2", "init2"]),
            (lambda w: {"state": "processing"}, []),
            (lambda w: {"poll": str(w.p1.id), "state": "succeeded"}, ["info1"]),
            (lambda w: {"key": w.key2.id, "type": "data", "source_type": "icloud.account"}, ["photos2"]),
            (lambda w: {"session": str(uuid.uuid4())}, []),
            (lambda w: {"user": 999999}, []),
        ],
    )
    def test_every_filter_filters(self, api, world, params, expected):
        assert ids(api.get("/tasks", params(world))) == [world.ids[name] for name in expected]

    def test_filters_combine_with_pagination(self, api, world):
        body = api.get("/tasks", {"key": world.key1.id, "limit": 2}).json()
        assert [item["id"] for item in body["data"]] == [world.ids["sms1"], world.ids["info1"]]
        assert body["has_more"] is True and body["total_count"] == 3
        body = api.get("/tasks", {"key": world.key1.id, "limit": 2, "after_id": world.ids["info1"]}).json()
        assert [item["id"] for item in body["data"]] == [world.ids["init1"]] and body["has_more"] is False


class TestDatetimeFilters:
    """A: created 10:00, started 10:30, completed 10:45; B: 11:00, 11:30, -; C: 12:00, -, -."""

    @pytest.fixture
    def abc(self, world):
        # Task ids are minted with their date_created (UUIDv7), so re-dated tasks get matching ids.
        dates = {
            "A": ("init1", dict(date_created=at(10), date_started=at(10, 30), date_completed=at(10, 45))),
            "B": ("info1", dict(date_created=at(11), date_started=at(11, 30), date_completed=None, state="processing")),
            "C": ("photos2", dict(date_created=at(12), date_started=None, date_completed=None)),
        }
        ids = {}
        for letter, (name, fields) in dates.items():
            task = Task.objects.get(id=world.ids[name])
            task.pk = uuid7_at(fields["date_created"])
            ids[letter] = str(task.pk)
            task.save(force_insert=True)
            Task.objects.filter(id=task.pk).update(**fields)
        Task.objects.exclude(id__in=ids.values()).delete()
        return ids

    @pytest.mark.parametrize(
        "params, expected",
        [
            ({"date_created": "2024-01-01T11:00:00Z"}, "B"),
            ({"date_created__gt": "2024-01-01T11:00:00Z"}, "C"),
            ({"date_created__gte": "2024-01-01T11:00:00Z"}, "CB"),
            ({"date_created__lt": "2024-01-01T11:00:00Z"}, "A"),
            ({"date_created__lte": "2024-01-01T11:00:00Z"}, "BA"),
            # naive values are UTC
            ({"date_created": "2024-01-01T11:00:00"}, "B"),
            ({"date_created__gte": "2024-01-01T11:00:00"}, "CB"),
            # milliseconds and microseconds, as ricloud-py sends them
            ({"date_created": "2024-01-01T11:00:00.000Z"}, "B"),
            ({"date_created__gt": "2024-01-01T10:59:59.999Z"}, "CB"),
            ({"date_created__lt": "2024-01-01T11:00:00.001Z"}, "BA"),
            ({"date_created__lte": "2024-01-01T10:59:59.999999Z"}, "A"),
            # explicit offsets
            ({"date_created": "2024-01-01T12:00:00+01:00"}, "B"),
            ({"date_created__gte": "2024-01-01T06:00:00-05:00"}, "CB"),
            ({"date_created__gt": "2024-01-01T11:00:00Z", "date_created__lt": "2024-01-01T13:00:00Z"}, "C"),
            ({"date_started": "2024-01-01T10:30:00Z"}, "A"),
            ({"date_started__gt": "2024-01-01T10:30:00Z"}, "B"),
            ({"date_started__gte": "2024-01-01T00:00:00Z"}, "BA"),
            ({"date_started__lt": "2024-01-01T11:30:00Z"}, "A"),
            ({"date_started__lte": "2024-01-01T11:30:00.000Z"}, "BA"),
            ({"date_completed": "2024-01-01T10:45:00Z"}, "A"),
            ({"date_completed__gt": "2024-01-01T10:45:00Z"}, ""),
            ({"date_completed__gte": "2024-01-01T10:45:00"}, "A"),
            ({"date_completed__lt": "2024-01-02T00:00:00Z"}, "A"),
            ({"date_completed__lte": "2024-01-01T10:44:59Z"}, ""),
        ],
    )
    def test_comparisons(self, api, abc, params, expected):
        assert ids(api.get("/tasks", params)) == [abc[letter] for letter in expected]


class TestBadFilterValues:
    @pytest.mark.parametrize(
        "params",
        [
            {"state": "bogus"},
            {"session": "not-a-uuid"},
            {"poll": "123"},
            {"key": "abc"},
            {"key": "0"},
            {"source": "1.5"},
            {"user": "-3"},
            {"user": "99999999999999999999"},
            {"date_created__gte": "yesterday"},
            {"date_started": "2024-13-01T00:00:00Z"},
            {"date_completed__lt": "1700000000"},
        ],
    )
    def test_it_is_a_400_naming_the_filter(self, api, world, params):
        body = assert_error(api.get("/tasks", params), 400, "invalid-parameter")
        (name,) = params
        assert list(body["params"]) == [name]
        assert body["params"][name] and all(isinstance(message, str) for message in body["params"][name])

    def test_every_bad_filter_is_named(self, api, world):
        body = assert_error(api.get("/tasks", {"state": "bogus", "key": "abc"}), 400, "invalid-parameter")
        assert set(body["params"]) == {"state", "key"}


class TestIsolation:
    def test_tasks_of_other_organisations_are_never_listed(self, api, other_api, world):
        theirs = User.objects.create(organisation=other_api.key.organisation, key=other_api.key, identifier="alice")
        create_session(key=other_api.key, user=theirs, source_type="mocks.mock", identifier="a@example.com", payload={})
        mine = set(world.ids.values())
        assert set(ids(api.get("/tasks", {"limit": 1000}))) == mine
        listed = ids(other_api.get("/tasks", {"limit": 1000}))
        assert len(listed) == 1 and mine.isdisjoint(listed)
        # Filtering by a foreign id finds nothing rather than leaking or failing.
        assert ids(other_api.get("/tasks", {"session": str(world.s1.id)})) == []
        assert ids(other_api.get("/tasks", {"key": world.key1.id})) == []
        assert ids(api.get("/tasks", {"key": other_api.key.id})) == []


def test_the_list_takes_a_constant_number_of_queries(api, world, django_assert_num_queries):
    for _ in range(3):
        poll = create_poll(key=world.key1, session=world.s1, source=None, payload={"info_types": ["*"], "data_types": ["photos"]})
        for task in poll.tasks.all():
            assert run_task(task) == "succeeded"
    # 1. the key (with its organisation) 2. count 3. tasks 4. their results
    with django_assert_num_queries(4):
        body = api.get("/tasks", {"limit": 100}).json()
    assert len(body["data"]) == 14
    assert sum(item["results"]["total_count"] for item in body["data"]) == 10
