import pytest

from tasks_app.choices import TaskState
from tasks_app.models import Task
from tests.asapi_app.conftest import v2_client
from workers.runner import run


def run_pending() -> int:
    """Run every pending task the way a worker would (in creation order); returns how many ran."""
    ran = 0
    while True:
        ids = list(Task.objects.filter(state=TaskState.PENDING).order_by("id").values_list("id", flat=True))
        if not ids:
            return ran
        for task_id in ids:
            run(task_id, max_attempts=5)
            ran += 1


@pytest.fixture(autouse=True)
def inline_worker(settings, tmp_path, monkeypatch):
    """Manager requests wait for the steps they start: here the wait runs them at once."""
    settings.RICLOUD_STORAGE_URL = f"local://{tmp_path}"

    def wait_until(channels, settled, timeout):
        run_pending()
        return settled()

    monkeypatch.setattr("asmaster_app.services.wait_until", wait_until)


@pytest.fixture
def am(key):
    return v2_client(key)
