"""docs/COVERAGE.md stays true: implemented endpoints route, documented filters exist."""
import re
from pathlib import Path

import pytest

from tasks_app import filters
from tasks_app.ids import uuid7

DOC = (Path(__file__).resolve().parents[1] / "docs" / "COVERAGE.md").read_text()
ROWS = re.findall(r"^\| `(GET|POST|DELETE) (/[^`]*)` \| (implemented|differs|not implemented) \|", DOC, re.M)
FILTERSETS = {
    "/tasks": filters.TaskFilterSet, "/sessions": filters.SessionFilterSet, "/polls": filters.PollFilterSet,
    "/sources": filters.SourceFilterSet, "/users": filters.UserFilterSet, "/results": filters.ResultFilterSet,
    "/events": filters.EventFilterSet, "/subscriptions": filters.SubscriptionFilterSet,
}


def test_the_document_lists_endpoints():
    assert len(ROWS) > 60


@pytest.mark.django_db
@pytest.mark.parametrize("method, path, status", ROWS, ids=[f"{m} {p}" for m, p, _ in ROWS])
def test_documented_endpoints_route(api, method, path, status):
    uuid_paths = ("/sessions", "/polls", "/tasks", "/results", "/events", "/subscriptions", "/fetch")
    sample = str(uuid7()) if path.startswith(uuid_paths) else "987654"
    response = api.generic(method, path.replace("{id}", sample), "{}" if method == "POST" else "", content_type="")
    body = response.json() if response["Content-Type"].startswith("application/json") else {}
    routed = response.status_code != 405 and body.get("message") != "No such endpoint."
    assert routed == (status == "implemented"), (response.status_code, body)


@pytest.mark.parametrize("path, names", re.findall(r"^\| `GET (/\w+)` \| ((?:`\w+`(?:, )?)+) \|$", DOC, re.M))
def test_documented_filters_exist(path, names):
    declared = set(FILTERSETS[path].base_filters)
    for name in re.findall(r"`(\w+)`", names):
        assert name in declared, f"{path} lacks the filter {name}"
