"""API.md §2.9 results: retrieve, list (consumed/expired hidden), acknowledge one or a batch."""
import hashlib
import uuid
from urllib.parse import urlsplit

import pytest
from django.utils import timezone

from tasks_app.models import Result, Task, User
from tasks_app.services.polls import create_poll
from tasks_app.services.sessions import create_session
from tests.tasks_app.test_conventions import assert_error
from workers.runner import run

pytestmark = pytest.mark.django_db

RESULT_FIELDS = [
    "id", "resource", "organisation", "poll", "task", "identifier", "url", "type", "checksum", "size", "signed_url",
    "state", "date_created", "date_consumed", "date_deleted",
]


@pytest.fixture(autouse=True)
def storage(settings, tmp_path):
    settings.RICLOUD_STORAGE_URL = f"local://{tmp_path}"
    return tmp_path


def make_session(key, identifier="a@example.com"):
    user, _ = User.objects.get_or_create(organisation=key.organisation, key=key, identifier="u")
    session = create_session(key=key, user=user, source_type="mocks.mock", identifier=identifier, payload={"password": "x"})
    assert run(Task.objects.get(session=session).id, max_attempts=5) == "succeeded"
    return session


def run_poll(key, session, payload):
    poll = create_poll(key=key, session=session, source=None, payload=payload)
    for task in poll.tasks.order_by("id"):
        assert run(task.id, max_attempts=5) == "succeeded"
    return poll


def ids(response):
    assert response.status_code == 200, response.content
    return [item["id"] for item in response.json()["data"]]


def ack(client, result_id):
    """POST /results/{id}/ack the way ricloud-py sends it: the body `null`, no Content-Type."""
    return client.generic("POST", f"/results/{result_id}/ack", "null", content_type="")


def batch(client, body):
    return client.post_json("/results/ack", body)


@pytest.fixture
def polls(key):
    """Two polls of one session: p1 → sms, whatsapp; p2 → account.info. Results r1, r2, r3 (oldest first)."""
    session = make_session(key)
    p1 = run_poll(key, session, {"data_types": ["messages.sms", "whatsapp.messages"]})
    p2 = run_poll(key, session, {"info_types": ["account.info"]})
    r1, r2, r3 = Result.objects.order_by("id")
    return {"p1": p1, "p2": p2, "r1": str(r1.id), "r2": str(r2.id), "r3": str(r3.id)}


@pytest.fixture
def foreign_result(other_api):
    key = other_api.key
    run_poll(key, make_session(key), {"data_types": ["messages.sms"]})
    return Result.objects.get(organisation_id=key.organisation_id)


def states(*result_ids):
    return [Result.objects.get(id=result_id).state for result_id in result_ids]


class TestRetrieve:
    def test_it_renders_the_result(self, api, key, polls, tmp_path):
        result = Result.objects.get(id=polls["r1"])
        response = api.get(f"/results/{result.id}")
        assert response.status_code == 200
        body = response.json()
        assert list(body) == RESULT_FIELDS
        assert body == {
            "id": str(result.id),
            "resource": "result",
            "organisation": key.organisation_id,
            "poll": str(polls["p1"].id),
            "task": str(result.task_id),
            "identifier": "messages.sms",
            "url": body["url"],
            "type": "json",
            "checksum": body["checksum"],
            "size": body["size"],
            "signed_url": body["signed_url"],  # the local store's download URL (test_result_downloads.py)
            "state": "available",
            "date_created": body["date_created"],
            "date_consumed": None,
            "date_deleted": None,
        }
        assert body["url"].startswith(f"local://{tmp_path}/")
        with open(urlsplit(body["url"]).path, "rb") as handle:
            content = handle.read()
        assert body["checksum"] == hashlib.md5(content).hexdigest() and body["size"] == len(content)

    def test_a_consumed_result_is_still_retrievable(self, api, polls):
        ack(api, polls["r1"])
        assert api.get(f"/results/{polls['r1']}").json()["state"] == "consumed"

    def test_a_result_of_another_organisation_is_404(self, api, foreign_result):
        assert_error(api.get(f"/results/{foreign_result.id}"), 404, "not-found")

    @pytest.mark.parametrize("result_id", ["not-a-uuid", str(uuid.uuid4())])
    def test_an_unknown_result_is_404(self, api, polls, result_id):
        assert_error(api.get(f"/results/{result_id}"), 404, "not-found")


class TestList:
    def test_it_lists_newest_first(self, api, polls):
        body = api.get("/results").json()
        assert [item["id"] for item in body["data"]] == [polls["r3"], polls["r2"], polls["r1"]]
        assert body["url"] == "/results" and body["total_count"] == 3 and body["has_more"] is False
        assert all(list(item) == RESULT_FIELDS for item in body["data"])

    @pytest.mark.parametrize(
        "params, expected",
        [
            (lambda p: {"poll": str(p["p1"].id)}, ["r2", "r1"]),
            (lambda p: {"poll": str(p["p2"].id)}, ["r3"]),
            (lambda p: {"task": str(Result.objects.get(id=p["r2"]).task_id)}, ["r2"]),
            (lambda p: {"task": str(uuid.uuid4())}, []),
            (lambda p: {"identifier": "account.info"}, ["r3"]),
            (lambda p: {"state": "available"}, ["r3", "r2", "r1"]),
            (lambda p: {"state": "consumed"}, []),
            (lambda p: {"poll": str(p["p1"].id), "identifier": "messages.sms"}, ["r1"]),
        ],
    )
    def test_filters(self, api, polls, params, expected):
        assert ids(api.get("/results", params(polls))) == [polls[name] for name in expected]

    def test_consumed_and_expired_results_are_hidden_unless_asked_for(self, api, polls):
        ack(api, polls["r1"])
        Result.objects.filter(id=polls["r2"]).update(state="expired", date_deleted=timezone.now())
        assert ids(api.get("/results")) == [polls["r3"]]
        assert api.get("/results").json()["total_count"] == 1
        assert ids(api.get("/results", {"state": "consumed"})) == [polls["r1"]]
        assert ids(api.get("/results", {"state": "expired"})) == [polls["r2"]]
        assert ids(api.get("/results", {"state": "available"})) == [polls["r3"]]
        assert ids(api.get("/results", {"state": ["consumed", "expired"]})) == [polls["r2"], polls["r1"]]
        assert ids(api.get("/results", {"poll": str(polls["p1"].id)})) == []
        assert ids(api.get("/results", {"poll": str(polls["p1"].id), "state": "consumed"})) == [polls["r1"]]

    @pytest.mark.parametrize("params", [{"state": "bogus"}, {"task": "x"}, {"poll": "1"}, {"date_created__gte": "now"}])
    def test_bad_filter_values_are_400(self, api, polls, params):
        body = assert_error(api.get("/results", params), 400, "invalid-parameter")
        assert set(body["params"]) == set(params)

    def test_results_of_other_organisations_are_never_listed(self, api, polls, foreign_result):
        assert foreign_result.id not in ids(api.get("/results", {"limit": 1000}))
        assert ids(api.get("/results", {"poll": str(foreign_result.poll_id)})) == []
        assert len(ids(api.get("/results", {"limit": 1000}))) == 3


class TestAck:
    @pytest.mark.parametrize("method", ["post", "get"])
    def test_it_marks_the_result_consumed(self, api, polls, method):
        before = timezone.now()
        if method == "post":
            response = ack(api, polls["r1"])
        else:
            response = api.get(f"/results/{polls['r1']}/ack")
        assert response.status_code == 200
        body = response.json()
        assert list(body) == RESULT_FIELDS
        assert body["id"] == polls["r1"] and body["state"] == "consumed" and body["date_consumed"].endswith("Z")
        result = Result.objects.get(id=polls["r1"])
        assert result.state == "consumed" and result.date_consumed >= before
        assert states(polls["r2"], polls["r3"]) == ["available", "available"]
        assert body == api.get(f"/results/{polls['r1']}").json()

    def test_a_json_body_is_accepted_too(self, api, polls):
        response = api.post_json(f"/results/{polls['r1']}/ack", {})
        assert response.status_code == 200 and response.json()["state"] == "consumed"

    def test_a_second_ack_changes_nothing(self, api, polls):
        first = ack(api, polls["r1"]).json()
        second = ack(api, polls["r1"])
        assert second.status_code == 200
        assert second.json() == first
        third = api.get(f"/results/{polls['r1']}/ack")
        assert third.status_code == 200 and third.json() == first

    def test_an_expired_result_stays_expired(self, api, polls):
        Result.objects.filter(id=polls["r1"]).update(state="expired")
        body = ack(api, polls["r1"]).json()
        assert (body["state"], body["date_consumed"]) == ("expired", None)
        assert states(polls["r1"]) == ["expired"]

    def test_a_result_of_another_organisation_is_404(self, api, foreign_result):
        assert_error(ack(api, foreign_result.id), 404, "not-found")
        assert_error(api.get(f"/results/{foreign_result.id}/ack"), 404, "not-found")
        assert states(foreign_result.id) == ["available"]

    def test_an_unknown_result_is_404(self, api, polls):
        assert_error(ack(api, uuid.uuid4()), 404, "not-found")
        assert_error(ack(api, "not-a-uuid"), 404, "not-found")


class TestBatchAck:
    @pytest.mark.parametrize("name", ["ids", "results"])
    def test_it_acks_every_result_and_lists_them(self, api, polls, name):
        before = timezone.now()
        response = batch(api, {name: [polls["r1"], polls["r3"]]})
        assert response.status_code == 200, response.content
        body = response.json()
        assert set(body) == {"resource", "data", "has_more", "total_count", "url"}
        assert (body["resource"], body["has_more"], body["total_count"], body["url"]) == ("list", False, 2, "/results")
        assert [item["id"] for item in body["data"]] == [polls["r3"], polls["r1"]]
        assert all(list(item) == RESULT_FIELDS and item["state"] == "consumed" for item in body["data"])
        assert states(polls["r1"], polls["r2"], polls["r3"]) == ["consumed", "available", "consumed"]
        assert all(r.date_consumed >= before for r in Result.objects.filter(state="consumed"))
        assert [item["date_consumed"] for item in body["data"]] == [
            api.get(f"/results/{polls[n]}").json()["date_consumed"] for n in ("r3", "r1")
        ]

    def test_already_consumed_results_keep_their_date(self, api, polls):
        first = ack(api, polls["r1"]).json()
        body = batch(api, {"ids": [polls["r1"], polls["r2"]]}).json()
        by_id = {item["id"]: item for item in body["data"]}
        assert by_id[polls["r1"]]["date_consumed"] == first["date_consumed"]
        assert by_id[polls["r2"]]["state"] == "consumed"

    def test_the_same_batch_twice_changes_nothing(self, api, polls):
        first = batch(api, {"ids": [polls["r1"], polls["r2"]]}).json()
        second = batch(api, {"ids": [polls["r2"], polls["r1"]]})
        assert second.status_code == 200 and second.json() == first

    def test_a_repeated_id_is_acked_once(self, api, polls):
        body = batch(api, {"ids": [polls["r1"], polls["r1"]]}).json()
        assert [item["id"] for item in body["data"]] == [polls["r1"]]

    def test_an_unknown_id_acks_nothing(self, api, polls):
        unknown = str(uuid.uuid4())
        body = assert_error(batch(api, {"ids": [polls["r1"], unknown]}), 404, "not-found")
        assert body["params"] == {"ids": [f"No result {unknown}."]}
        assert states(polls["r1"], polls["r2"], polls["r3"]) == ["available"] * 3

    def test_a_foreign_id_acks_nothing(self, api, polls, foreign_result):
        body = assert_error(batch(api, {"results": [polls["r1"], polls["r2"], str(foreign_result.id)]}), 404, "not-found")
        assert body["params"] == {"ids": [f"No result {foreign_result.id}."]}
        assert states(polls["r1"], polls["r2"], foreign_result.id) == ["available"] * 3

    @pytest.mark.parametrize(
        "body, field",
        [
            ({"ids": []}, "ids"),
            ({"results": []}, "results"),
            ({"ids": "r1"}, "ids"),
            ({"ids": {"a": 1}}, "ids"),
            ({"results": 5}, "results"),
            ({"ids": ["not-a-uuid"]}, "ids"),
            ({"ids": [None]}, "ids"),
            ({"ids": [str(uuid.uuid4()) for _ in range(1001)]}, "ids"),
            ({}, "ids"),
            (None, "ids"),
        ],
    )
    def test_it_validates(self, api, polls, body, field):
        error = assert_error(batch(api, body), 400, "invalid-parameter")
        assert list(error["params"]) == [field]
        assert states(polls["r1"], polls["r2"], polls["r3"]) == ["available"] * 3

    def test_a_malformed_id_among_good_ones_acks_nothing(self, api, polls):
        error = assert_error(batch(api, {"ids": [polls["r1"], "nope"]}), 400, "invalid-parameter")
        assert error["params"] == {"ids": {"1": ["Must be a valid UUID."]}}
        assert states(polls["r1"]) == ["available"]

    def test_1000_ids_are_accepted(self, api, polls):
        result = Result.objects.get(id=polls["r1"])
        Result.objects.bulk_create(
            Result(organisation_id=result.organisation_id, poll_id=result.poll_id, task_id=result.task_id,
                   identifier=f"extra-{i}", url=result.url, type="json", checksum=result.checksum, size=result.size)
            for i in range(997)
        )
        all_ids = [str(i) for i in Result.objects.values_list("id", flat=True)]
        assert len(all_ids) == 1000
        body = batch(api, {"ids": all_ids}).json()
        assert body["total_count"] == 1000
        assert not Result.objects.filter(state="available").exists()

    def test_it_requires_post(self, api, polls):
        assert_error(api.get("/results/ack"), 405, "method-not-allowed")

    @pytest.mark.parametrize("count", [2, 50])
    def test_it_takes_a_constant_number_of_queries(self, api, polls, count, django_assert_max_num_queries):
        result = Result.objects.get(id=polls["r1"])
        Result.objects.bulk_create(
            Result(organisation_id=result.organisation_id, poll_id=result.poll_id, task_id=result.task_id,
                   identifier=f"extra-{i}", url=result.url, type="json", checksum=result.checksum, size=result.size)
            for i in range(count)
        )
        wanted = [str(i) for i in Result.objects.filter(identifier__startswith="extra-").values_list("id", flat=True)]
        # 1. the key (with its organisation) 2. savepoint 3. SELECT ... FOR UPDATE 4. UPDATE results
        # 5. UPDATE their tasks' results_consumed 6. release savepoint
        with django_assert_max_num_queries(6):
            response = batch(api, {"ids": wanted})
        assert response.status_code == 200 and response.json()["total_count"] == count
