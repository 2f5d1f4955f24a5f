"""The workers' maintenance loop: one pass at a time across processes; leases renewed by heartbeat."""
from datetime import timedelta

import psycopg2
import pytest
from django.db import connection
from django.utils import timezone

from tasks_app.models import Task, TaskCountDelta, User
from tasks_app.services.sessions import create_session
from workers import heartbeat, maintenance

pytestmark = pytest.mark.django_db


@pytest.fixture
def task(key):
    user = User.objects.create(organisation=key.organisation, key=key, identifier="m")
    session = create_session(key=key, user=user, source_type="mocks.mock", identifier="m@example.com", payload={})
    return Task.objects.get(session=session)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the pass lock is a Postgres advisory lock")
def test_a_pass_is_skipped_while_another_process_runs_one(task):
    settings = connection.settings_dict
    other = psycopg2.connect(dbname=settings["NAME"], user=settings["USER"], host=settings["HOST"] or "127.0.0.1",
                             port=settings["PORT"] or 5432)
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [maintenance.LOCK])
        assert maintenance.run_once() is None  # another worker holds the pass
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [maintenance.LOCK])
        outcome = maintenance.run_once()
        assert outcome is not None and outcome["folded"] > 0
        assert not TaskCountDelta.objects.exists()
    finally:
        other.close()


def test_a_heartbeat_renews_the_leases_of_running_tasks_only(task, settings):
    settings.RICLOUD_TASK_LEASE_SECONDS = 20
    soon = timezone.now() + timedelta(seconds=1)
    Task.objects.filter(id=task.id).update(state="processing", lease_expires=soon)
    assert heartbeat.renew([task.id]) == 1
    assert Task.objects.get(id=task.id).lease_expires > soon + timedelta(seconds=15)
    Task.objects.filter(id=task.id).update(state="succeeded", lease_expires=None)
    assert heartbeat.renew([task.id]) == 0
