"""Stale aschannel deliveries: the retention applied by the maintenance loop, `manage.py
dropdeliveries` and `POST /drop-deliveries/` (docs/DECISIONS.md 72)."""
import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from tasks_app.choices import DeliveryState, ResultState
from tasks_app.models import Delivery, Result, Task
from tasks_app.services.deliveries import drop_deliveries, drop_stale_deliveries
from tasks_app.services.organisations import create_organisation
from workers import maintenance
from workers.runner import run

from .conftest import v2_client

pytestmark = pytest.mark.django_db

ACCOUNT = "john.appleseed@reincubate.com"


@pytest.fixture(autouse=True)
def storage(settings, tmp_path):
    settings.RICLOUD_STORAGE_URL = f"local://{tmp_path}"


def delivered(client, count=1, age=0.0):
    """`count` delivered log-in results on the client's stream, `age` seconds old."""
    client.post("/register-account/", {"service": "iCloud", "username": ACCOUNT})
    ids = []
    for _ in range(count):
        response = client.post("/submit-task/", {"service": "icloud", "action": "log-in", "account": ACCOUNT,
                                                 "password": "joshua"})
        ids.append(response.json()["task_id"])
        run(ids[-1], max_attempts=5)
    Delivery.objects.filter(task_id__in=ids).update(date_created=timezone.now() - timedelta(seconds=age))
    return ids


def pending(task_ids):
    return Delivery.objects.filter(task_id__in=task_ids, state=DeliveryState.PENDING).count()


def test_the_maintenance_pass_drops_deliveries_past_the_retention(v2, settings):
    settings.RICLOUD_DELIVERY_RETENTION_SECONDS = 3600
    old, fresh = delivered(v2, 2, age=3700), delivered(v2, 1, age=10)
    outcome = maintenance.run_once()
    assert outcome["deliveries_dropped"] == 2
    assert pending(old) == 0 and pending(fresh) == 1
    # The tasks and their results stay: only the stream stops sending them.
    assert Task.objects.filter(id__in=old, state="succeeded", results_consumed=False).count() == 2
    assert Result.objects.filter(task_id__in=old, state=ResultState.AVAILABLE).count() == 2
    status = v2.post("/task-status/", {"task_ids": old[0]}).json()
    assert status[old[0]]["status"] == "Publish complete"


def test_a_retention_of_zero_keeps_them_until_consumed_but_not_past_their_result(v2, settings):
    settings.RICLOUD_DELIVERY_RETENTION_SECONDS = 0
    old, gone = delivered(v2, 1, age=10 * 24 * 3600), delivered(v2, 1)
    Result.objects.filter(task_id__in=gone).update(state=ResultState.EXPIRED)
    assert drop_stale_deliveries() == 1  # the one whose result expired: the stream cannot read it
    assert pending(old) == 1 and pending(gone) == 0


def test_consumed_deliveries_are_not_touched(v2):
    ids = delivered(v2, 1, age=10 * 24 * 3600)
    assert v2.post("/results-consumed/", {"task_ids": ids[0]}).json() == {"success": True}
    assert drop_deliveries(older_than=0) == 0
    assert Delivery.objects.get(task_id=ids[0]).state == DeliveryState.CONSUMED


def test_the_command(v2, key, settings):
    settings.RICLOUD_DELIVERY_RETENTION_SECONDS = 3600
    _, other_key = create_organisation(name="Other")
    mine_old, mine_new = delivered(v2, 1, age=7200), delivered(v2, 1, age=60)
    theirs = delivered(v2_client(other_key), 1, age=7200)
    out = io.StringIO()
    call_command("dropdeliveries", "--stream", key.stream, stdout=out)  # the configured retention
    assert out.getvalue().strip() == "Dropped 1 pending delivery."
    assert pending(mine_old) == 0 and pending(mine_new) == 1 and pending(theirs) == 1
    call_command("dropdeliveries", "--organisation", str(key.organisation_id), "--all", stdout=out)
    assert pending(mine_new) == 0 and pending(theirs) == 1
    call_command("dropdeliveries", "--older-than", "3600", stdout=out)
    assert pending(theirs) == 0 and out.getvalue().strip().endswith("Dropped 1 pending delivery.")
    settings.RICLOUD_DELIVERY_RETENTION_SECONDS = 0
    with pytest.raises(CommandError, match="--older-than SECONDS or --all"):
        call_command("dropdeliveries", stdout=out)
    with pytest.raises(CommandError):
        call_command("dropdeliveries", "--older-than", "-1", stdout=out)


class TestDropDeliveriesEndpoint:
    def test_it_drops_the_keys_pending_deliveries(self, v2):
        _, other_key = create_organisation(name="Other")
        ids, theirs = delivered(v2, 3), delivered(v2_client(other_key), 1)
        assert v2.post("/drop-deliveries/").json() == {"dropped": 3, "success": True}
        assert pending(ids) == 0 and pending(theirs) == 1
        assert v2.post("/drop-deliveries/").json() == {"dropped": 0, "success": True}

    def test_by_age_and_by_task(self, v2):
        old, fresh = delivered(v2, 2, age=600), delivered(v2, 2, age=5)
        assert v2.post("/drop-deliveries/", {"older_than": "300"}).json()["dropped"] == 2
        assert pending(old) == 0 and pending(fresh) == 2
        assert v2.post("/drop-deliveries/", {"task_ids": fresh[0].upper()}).json()["dropped"] == 1
        assert pending(fresh) == 1

    @pytest.mark.parametrize("form", [{"older_than": "-1"}, {"older_than": "soon"}, {"older_than": "nan"},
                                      {"task_ids": "not-a-uuid"}])
    def test_bad_input_is_a_400(self, v2, form):
        response = v2.post("/drop-deliveries/", form)
        assert response.status_code == 400 and response.json()["success"] is False
        assert list(response.json()["errors"]) == [next(iter(form))]

    def test_it_is_a_post_with_a_token(self, v2, anon):
        assert v2.get("/drop-deliveries/").status_code == 405
        assert anon.post("/drop-deliveries/").status_code == 401
