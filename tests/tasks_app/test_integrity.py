"""The hot tables' foreign keys are not enforced by the database (DECISIONS 146): what takes their
place is an engine that never writes an orphan, and a check that says so (`checkintegrity`)."""
from io import StringIO

import pytest
from django.core.management import call_command

from tasks_app.models import Event, Organisation, Poll, Result, Task
from tasks_app.services.integrity import orphans, unenforced
from workers.runner import run

pytestmark = pytest.mark.django_db(transaction=True)


def check():
    out, err = StringIO(), StringIO()
    try:
        call_command("checkintegrity", stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, out.getvalue(), err.getvalue()


def test_the_hot_tables_foreign_keys_are_the_unenforced_ones():
    relations = {(model._meta.db_table, field.column) for model, field in unenforced()}
    assert ("tasks_app_task", "poll_id") in relations
    assert ("tasks_app_task", "organisation_id") in relations
    assert ("tasks_app_task_blocked_by", "to_task_id") in relations
    assert ("tasks_app_result", "task_id") in relations
    assert ("tasks_app_event", "key_id") in relations
    assert {table for table, _ in relations} == {
        "tasks_app_poll", "tasks_app_task", "tasks_app_task_blocked_by", "tasks_app_result", "tasks_app_delivery",
        "tasks_app_event", "tasks_app_webhookdelivery",
    }
    # The tables written once per customer action keep their constraints (e.g. a session's key).
    assert ("tasks_app_session", "key_id") not in relations


def test_a_clean_database_has_no_orphans(api):
    created = api.post_json("/users", {"identifier": "integrity"})
    assert created.status_code == 201, created.content
    assert orphans() == {}
    code, out, _ = check()
    assert code == 0
    assert "No orphan rows." in out
    assert "tasks_app_task.poll_id -> tasks_app_poll: 0 orphan(s)" in out


def test_an_orphan_is_found_and_fails_the_check(org, key):
    org, _ = org
    Event.objects.create(organisation_id=org.id, key_id=key.id, type="task", action="created", object_id="x")
    ghost = Event.objects.create(organisation_id=org.id + 1000, key_id=key.id, type="task", action="created",
                                 object_id="y")
    assert not Organisation.objects.filter(id=ghost.organisation_id).exists()  # the database let it in
    assert orphans() == {"tasks_app_event.organisation_id": 1}
    code, out, err = check()
    assert code == 1
    assert "tasks_app_event.organisation_id -> tasks_app_organisation: 1 orphan(s)" in out
    assert "1 orphan row(s) in 1 relation(s)." in err


def test_deleting_a_parent_through_django_still_cascades(api, org, settings, tmp_path):
    """Django's collector, not the database, cascades: deleting an organisation takes its polls,
    tasks, their links, results and events with it and leaves no orphan."""
    settings.RICLOUD_STORAGE_URL = f"local://{tmp_path}"
    org, _ = org
    user = api.post_json("/users", {"identifier": "cascade"}).json()["id"]
    session = api.post_json("/sessions", {"source": {"user": user, "type": "mocks.mock",
                                                     "identifier": "john.appleseed@reincubate.com"},
                                          "payload": {"password": "joshua"}}).json()
    poll = api.post_json("/polls", {"session": session["id"], "payload": {"info_types": ["account.info"]}})
    assert poll.status_code == 201, poll.content
    for task in Task.objects.filter(organisation_id=org.id).order_by("id"):  # the init first: it blocks the poll
        assert run(task.id, max_attempts=5) == "succeeded"
    assert Result.objects.filter(organisation_id=org.id).exists()
    assert Task.blocked_by.through.objects.exists()
    org.delete()
    for model in (Task, Poll, Result, Event):
        assert not model.objects.filter(organisation_id=org.id).exists(), model
    assert not Task.blocked_by.through.objects.exists()
    assert orphans() == {}
