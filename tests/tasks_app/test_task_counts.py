"""total_count of GET /tasks from trigger-kept counters, and date windows as id windows."""
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from tasks_app.models import Task, TaskCount, TaskCountDelta, User
from tasks_app.services.counts import count_tasks, fold_task_counts
from tasks_app.services.organisations import create_key
from tasks_app.services.polls import create_poll
from tasks_app.services.sessions import create_session
from workers.runner import run

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the counters are a Postgres trigger"),
]


@pytest.fixture
def tasks(key, settings, tmp_path):
    settings.RICLOUD_STORAGE_URL = f"local://{tmp_path}"
    second_key = create_key(organisation=key.organisation)
    for k, name in ((key, "a"), (second_key, "b")):
        user = User.objects.create(organisation=key.organisation, key=k, identifier=name)
        session = create_session(key=k, user=user, source_type="mocks.mock", identifier=name, payload={})
        run(Task.objects.get(session=session).id, max_attempts=5)
        poll = create_poll(key=k, session=session, source=None,
                           payload={"data_types": ["photos", "notes.notes"], "mock": {"fail": ["photos"]}})
        for task in poll.tasks.all():
            run(task.id, max_attempts=5)
    return second_key


@pytest.mark.parametrize("params", [{}, {"state": "failed"}, {"state": "succeeded"}, {"type": "data"},
                                    {"type": "session.init", "state": "succeeded"}, {"source_type": "mocks.mock"},
                                    {"state": "pending"}, {"key": "second"}])
def test_total_count_matches_a_real_count(api, key, tasks, params):
    if params.get("key") == "second":
        params = {"key": tasks.id}
    expected = Task.objects.filter(organisation_id=key.organisation_id, **{
        {"key": "key_id"}.get(name, name): value for name, value in params.items()}).count()
    body = api.get("/tasks", {**params, "limit": 1}).json()
    assert body["total_count"] == expected


def test_counters_follow_direct_updates_and_deletes_before_and_after_folding(key, tasks):
    def counted(**filters):
        return count_tasks(key.organisation_id, filters)

    assert counted(state="failed") == Task.objects.filter(state="failed").count() == 2
    assert TaskCountDelta.objects.exists()  # nothing folded yet: the count reads the deltas
    Task.objects.filter(state="failed").update(state="succeeded")
    assert counted(state="failed") == 0
    assert fold_task_counts() > 0
    assert not TaskCountDelta.objects.exists()
    assert counted(state="failed") == 0 and counted(state="succeeded") == Task.objects.count()
    Task.objects.filter(type="data").delete()
    assert counted() == 2
    fold_task_counts()
    assert counted() == 2 and counted(type="data") == 0
    assert sum(TaskCount.objects.filter(organisation_id=key.organisation_id).values_list("n", flat=True)) == 2


def test_writers_never_update_a_shared_counter_row(key, tasks):
    """Task writes only append deltas: the totals table changes only when folded."""
    fold_task_counts()
    before = list(TaskCount.objects.order_by("id").values_list("id", "n"))
    Task.objects.filter(state="succeeded").update(state="failed")
    assert list(TaskCount.objects.order_by("id").values_list("id", "n")) == before
    assert count_tasks(key.organisation_id, {"state": "succeeded"}) == 0


def test_a_date_window_lists_exactly_the_tasks_in_it(api, key, tasks):
    created = list(Task.objects.order_by("-id").values_list("id", "date_created"))
    middle = created[len(created) // 2][1]
    for params, match in (({"date_created__gte": middle}, lambda d: d >= middle),
                          ({"date_created__lt": middle}, lambda d: d < middle),
                          ({"date_created": middle}, lambda d: d == middle),
                          ({"date_created__gt": middle - timedelta(hours=1), "date_created__lte": middle},
                           lambda d: middle - timedelta(hours=1) < d <= middle)):
        query = {name: value.isoformat().replace("+00:00", "Z") for name, value in params.items()}
        body = api.get("/tasks", {**query, "limit": 100}).json()
        expected = [str(task_id) for task_id, date in created if match(date)]
        assert [item["id"] for item in body["data"]] == expected and body["total_count"] == len(expected)
    assert timezone.now() > middle
