"""v2 asapi endpoints, field for field against the asapi page (API.md §6)."""
import uuid

import pytest

from tasks_app.models import Source, Task
from workers.runner import run

pytestmark = pytest.mark.django_db

ACCOUNT = "john.appleseed@reincubate.com"


@pytest.fixture(autouse=True)
def storage(settings, tmp_path):
    settings.RICLOUD_STORAGE_URL = f"local://{tmp_path}"


def register(client, username=ACCOUNT, service="iCloud"):
    return client.post("/register-account/", {"service": service, "username": username})


def submit(client, action, account=ACCOUNT, service="icloud", **params):
    return client.post("/submit-task/", {"service": service, "action": action, "account": account, **params})


def assert_v2_error(response, field, code, status=400):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["success"] is False and isinstance(body["error"], str) and body["error"]
    assert [pair[1] for pair in body["errors"][field]] == [code]
    assert isinstance(body["errors"][field][0][0], str)
    return body


def run_submitted(response):
    task_id = response.json()["task_id"]
    run(task_id, max_attempts=5)
    return task_id


class TestAccount:
    def test_it_describes_services_actions_and_endpoints(self, v2, key):
        body = v2.get("/account/", HTTP_HOST="asapi.example.com").json()
        assert set(body) == {"services", "task_submission_endpoint", "stream_endpoints", "retrieval_protocol", "stream"}
        assert body["stream"] == key.stream  # the stream name, before any task (DECISIONS 71)
        assert body["task_submission_endpoint"] == {"host": "asapi.example.com", "protocol": "http", "uri": "/submit-task/"}
        assert body["stream_endpoints"] == [{"host": "asapi.example.com", "protocol": "http", "uri": "/stream/"}]
        assert body["retrieval_protocol"] == "aschannel"
        (icloud,) = body["services"]
        assert (icloud["name"], icloud["slug"]) == ("iCloud", "icloud")
        actions = {action["slug"]: action for action in icloud["actions"]}
        assert set(actions) == {"log-in", "perform-2fa-challenge", "submit-2fa-challenge", "list-devices", "fetch-data",
                                "download-file"}
        fetch = actions["fetch-data"]
        assert set(fetch) == {"name", "slug", "description", "execution", "parameters", "permissions"}
        assert fetch["name"] == "Fetch Data" and fetch["execution"] == "Asynchronous"
        assert {"sms", "photos", "whatsapp_messages"} <= set(fetch["permissions"]["data"])
        params = {p["slug"]: p for p in fetch["parameters"]}
        assert params["since"] == {"name": "Since", "slug": "since", "type": "date", "description": "", "optional": True}
        assert params["data"]["optional"] is False and params["device"]["optional"] is True

    def test_it_advertises_the_public_url_when_configured(self, v2, settings):
        settings.RICLOUD_PUBLIC_URL = "https://ricloud.example.org"
        body = v2.get("/account/").json()
        assert body["task_submission_endpoint"] == {"host": "ricloud.example.org", "protocol": "https", "uri": "/submit-task/"}

    def test_the_retrieval_protocol_belongs_to_the_key(self, v2_store):
        assert v2_store.get("/account/").json()["retrieval_protocol"] == "asstore"

    def test_it_needs_a_token(self, anon):
        response = anon.get("/account/")
        assert response.status_code == 401 and response["Content-Type"] == "application/json"
        assert response.json()["success"] is False

    def test_wrong_method_is_405(self, v2):
        assert v2.post("/account/").status_code == 405


class TestRegistration:
    def test_register_and_deregister(self, v2):
        assert register(v2).json() == {"success": True}
        assert Source.objects.get(identifier=ACCOUNT).type == "icloud.account"
        response = v2.post("/deregister-account/", {"service": "icloud", "username": ACCOUNT})
        assert response.status_code == 200 and response.json() == {"success": True}

    @pytest.mark.parametrize("service", ["iCloud", "icloud", "ICLOUD", "Icloud"])
    def test_service_by_name_or_slug_case_insensitive(self, v2, service):
        assert register(v2, service=service).json() == {"success": True}

    def test_registering_twice_is_unique_together(self, v2):
        register(v2)
        assert_v2_error(register(v2), "__all__", "unique_together")

    def test_a_deregistered_account_can_register_again(self, v2):
        register(v2)
        v2.post("/deregister-account/", {"service": "icloud", "username": ACCOUNT})
        assert register(v2).json() == {"success": True}
        assert Source.objects.filter(identifier=ACCOUNT).count() == 1

    def test_deregistering_an_unknown_account_is_no_such_account(self, v2):
        assert_v2_error(v2.post("/deregister-account/", {"service": "icloud", "username": "x"}), "account", "no_such_account")

    def test_accounts_are_per_client(self, v2, other_api):
        from .conftest import v2_client

        register(v2)
        assert register(v2_client(other_api.key)).json() == {"success": True}

    def test_bad_service_and_missing_username(self, v2):
        assert_v2_error(register(v2, service="myspace"), "service", "invalid_service")
        assert_v2_error(v2.post("/register-account/", {"service": "icloud"}), "username", "missing-param")


class TestSubmitTask:
    @pytest.fixture(autouse=True)
    def registered(self, v2):
        register(v2)

    def test_success_shape(self, v2, key):
        response = submit(v2, "log-in", password="joshua")
        assert response.status_code == 200
        body = response.json()
        assert set(body) == {"task_id", "retrieval_protocol", "stream", "success"}
        assert body["success"] is True and body["retrieval_protocol"] == "aschannel" and body["stream"] == key.stream
        task = Task.objects.get(id=body["task_id"])
        assert (task.type, task.api_version, task.source_type, task.state) == ("log-in", 2, "icloud.account", "pending")

    @pytest.mark.parametrize("data", [{"data": "sms,photos"}, {"data": ["sms", "photos"]}, {"data": ["sms,photos"]}])
    def test_list_parameters_comma_joined_or_repeated(self, v2, data):
        task = Task.objects.get(id=submit(v2, "fetch-data", **data).json()["task_id"])
        assert task.target == "sms,photos" and task.payload["data"] == ["sms", "photos"]

    def test_every_documented_error(self, v2):
        assert_v2_error(submit(v2, "log-in", service="nope"), "service", "invalid_service")
        assert_v2_error(submit(v2, "fly", password="x"), "action", "invalid_action")
        assert_v2_error(submit(v2, "log-in", account="nobody@example.com", password="x"), "account", "no_such_account")
        assert_v2_error(submit(v2, "fetch-data"), "data", "missing-param")
        assert_v2_error(submit(v2, "log-in"), "password", "missing-param")
        assert_v2_error(submit(v2, "fetch-data", data="sms,telegrams"), "data", "invalid_parameter_value")
        assert_v2_error(submit(v2, "fetch-data", data="sms", since="last tuesday"), "since", "invalid")
        assert Task.objects.count() == 0

    def test_a_v2_task_is_a_v3_task(self, v2, api):
        task_id = run_submitted(submit(v2, "log-in", password="joshua"))
        body = api.get(f"/tasks/{task_id}").json()
        assert body["type"] == "log-in" and body["state"] == "succeeded" and body["source_type"] == "icloud.account"
        assert body["results"]["total_count"] == 1
        assert [t["id"] for t in api.get("/tasks", {"type": "log-in"}).json()["data"]] == [task_id]


class TestTaskStatus:
    @pytest.fixture(autouse=True)
    def registered(self, v2, v2_store):
        register(v2)
        register(v2_store)

    def status(self, client, *ids):
        return client.post("/task-status/", {"task_ids": ",".join(map(str, ids))})

    def test_the_seven_states(self, v2, v2_store):
        pending = submit(v2, "log-in", password="joshua").json()["task_id"]
        done = run_submitted(submit(v2, "log-in", password="joshua"))
        stored = run_submitted(submit(v2_store, "log-in", password="joshua"))
        failed = run_submitted(submit(v2_store, "log-in", password="wrong-password"))
        unpublished = submit(v2, "log-in", password="joshua").json()["task_id"]
        Task.objects.filter(id=unpublished).update(state="succeeded")  # finished, nothing published yet
        progress = submit(v2, "log-in", password="joshua").json()["task_id"]
        Task.objects.filter(id=progress).update(state="processing")
        crashed = submit(v2, "log-in", password="joshua").json()["task_id"]
        Task.objects.filter(id=crashed).update(state="failed", error="worker-lost")
        unknown = uuid.uuid4()
        body = self.status(v2, pending, done, progress, unpublished, crashed, unknown).json()
        assert body.pop("success") is True
        assert body == {
            pending: {"status": "Pending", "result_retrieved": False, "success": False},
            done: {"status": "Publish complete", "retrieval_protocol": "aschannel", "result_retrieved": False,
                   "success": True},
            progress: {"status": "In progress", "result_retrieved": False, "success": False},
            unpublished: {"status": "Work complete", "retrieval_protocol": "aschannel", "result_retrieved": False,
                          "success": False},
            crashed: {"status": "Task did not complete successfully.", "retrieval_protocol": "aschannel",
                      "result_retrieved": False, "success": False, "error": "Task did not complete successfully."},
            str(unknown): {"success": False, "error": "No task with this ID was found."},
        }
        body = self.status(v2_store, stored, failed).json()
        assert body[stored] == {"status": "Publish complete", "retrieval_protocol": "asstore",
                                "retrieval_endpoint": f"http://testserver/fetch/{stored}/", "result_retrieved": False,
                                "success": True}
        assert body[failed] == {"status": "Publish failed", "retrieval_protocol": "asstore",
                                "retrieval_endpoint": f"http://testserver/fetch/{failed}/", "result_retrieved": False,
                                "success": False, "error": "Task did not complete successfully."}

    def test_ids_are_answered_in_the_form_they_were_sent(self, v2):
        task_id = submit(v2, "log-in", password="x").json()["task_id"]
        upper, bare = task_id.upper(), task_id.replace("-", "")
        body = v2.post("/task-status/", {"task_ids": f"{upper},{bare}"}).json()
        assert body[upper]["status"] == body[bare]["status"] == "Pending"

    def test_the_orm_and_postgres_lookups_agree(self, v2, v2_store, key):
        from django.db import connection

        from asapi_app import views

        ids = [run_submitted(submit(v2, "log-in", password="joshua")), submit(v2, "log-in", password="x").json()["task_id"],
               str(uuid.uuid4())]
        fast = sorted(views.task_rows(key.organisation_id, ids))
        vendor = connection.vendor
        try:
            connection.vendor = "other"
            portable = sorted(views.task_rows(key.organisation_id, ids))
        finally:
            connection.vendor = vendor
        assert fast == portable and len(fast) == 2

    def test_ids_as_repeated_keys_or_single(self, v2):
        a = submit(v2, "log-in", password="x").json()["task_id"]
        b = submit(v2, "log-in", password="x").json()["task_id"]
        assert set(v2.post("/task-status/", {"task_ids": [a, b]}).json()) == {a, b, "success"}
        assert set(v2.post("/task-status/", {"task_ids": a}).json()) == {a, "success"}

    def test_foreign_tasks_are_not_found(self, v2, v2_store):
        mine = submit(v2_store, "log-in", password="x").json()["task_id"]
        from tasks_app.services.organisations import create_organisation

        from .conftest import v2_client

        stranger = v2_client(create_organisation(name="Stranger")[1])
        assert self.status(stranger, mine).json()[mine] == {"success": False, "error": "No task with this ID was found."}

    def test_exactly_10000_ids_in_one_query(self, v2, django_assert_num_queries):
        task_id = submit(v2, "log-in", password="x").json()["task_id"]
        ids = [task_id] + [str(uuid.uuid4()) for _ in range(9_999)]
        with django_assert_num_queries(1):  # the tasks with their result flags (the key is cached)
            response = v2.post("/task-status/", {"task_ids": ",".join(ids)})
        body = response.json()
        assert response.status_code == 200 and len(body) == 10_001 and body[task_id]["status"] == "Pending"

    def test_10001_ids_is_limit_exceeded(self, v2):
        ids = ",".join(str(uuid.uuid4()) for _ in range(10_001))
        assert_v2_error(v2.post("/task-status/", {"task_ids": ids}), "task_ids", "limit_exceeded")

    def test_a_malformed_id_is_invalid(self, v2):
        assert_v2_error(self.status(v2, uuid.uuid4(), "nope"), "task_ids", "invalid")
        assert_v2_error(v2.post("/task-status/", {}), "task_ids", "missing-param")


class TestConsumptionAndAsstore:
    @pytest.fixture(autouse=True)
    def registered(self, v2, v2_store):
        register(v2)
        register(v2_store)

    def test_results_consumed_marks_result_retrieved(self, v2):
        task_id = run_submitted(submit(v2, "log-in", password="joshua"))
        assert v2.post("/results-consumed/", {"task_ids": task_id}).json() == {"success": True}
        status = v2.post("/task-status/", {"task_ids": task_id}).json()[task_id]
        assert status["result_retrieved"] is True and status["status"] == "Publish complete"

    def test_results_consumed_rejects_unknown_ids(self, v2):
        assert_v2_error(v2.post("/results-consumed/", {"task_ids": str(uuid.uuid4())}), "task_ids", "invalid")

    @pytest.mark.parametrize("path", ["/fetch/{}/", "/fetch/asstore/{}"])
    def test_asstore_serves_a_result_once(self, v2_store, path):
        task_id = run_submitted(submit(v2_store, "log-in", password="joshua"))
        response = v2_store.get(path.format(task_id))
        assert response.status_code == 200
        assert b'"Log-in successful"' in response.content
        again = v2_store.get(path.format(task_id))
        assert again.status_code == 404 and again["Content-Type"] == "application/json"
        assert again.json() == {"message": "No results were found for this task id.", "success": False,
                                "error": "task-result-not-found"}
        assert v2_store.post("/task-status/", {"task_ids": task_id}).json()[task_id]["result_retrieved"] is True

    def test_asstore_serves_files_raw(self, v2_store):
        run_submitted(submit(v2_store, "log-in", password="joshua"))
        feeds_task = run_submitted(submit(v2_store, "fetch-data", data="photos"))
        photo = v2_store.get(f"/fetch/{feeds_task}/").json()["photos"][0]
        file_task = run_submitted(submit(v2_store, "download-file", file=photo["file_id"]))
        response = v2_store.get(f"/fetch/{file_task}/")
        assert response.status_code == 200 and len(response.content) == photo["files"][0]["size"]

    def test_fetch_of_unknown_malformed_or_foreign_is_404(self, v2, v2_store):
        assert v2_store.get(f"/fetch/{uuid.uuid4()}/").status_code == 404
        assert v2_store.get("/fetch/not-a-uuid/").status_code == 404
        task_id = run_submitted(submit(v2_store, "log-in", password="joshua"))
        from tasks_app.services.organisations import create_organisation

        from .conftest import v2_client

        assert v2_client(create_organisation(name="Thief")[1]).get(f"/fetch/{task_id}/").status_code == 404
        assert v2_store.get(f"/fetch/{task_id}/").status_code == 200


class TestICloudActions:
    @pytest.fixture(autouse=True)
    def registered(self, v2_store):
        register(v2_store)
        register(v2_store, username="2fa-user@example.com")

    def result(self, client, response):
        task_id = run_submitted(response)
        return Task.objects.get(id=task_id), client.get(f"/fetch/{task_id}/")

    def test_log_in_then_devices_and_data(self, v2_store):
        task, response = self.result(v2_store, submit(v2_store, "list-devices"))
        assert task.state == "failed" and task.error == "login-required"
        assert response.json()["error"] == "login-required"
        _, response = self.result(v2_store, submit(v2_store, "log-in", password="joshua"))
        assert response.json()["message"] == "Log-in successful" and response.json()["auth_token"]
        _, response = self.result(v2_store, submit(v2_store, "list-devices"))
        devices = response.json()["devices"]
        assert len(devices) == 4 and all({"device_name", "colour", "name", "ios_version"} <= set(d) for d in devices.values())
        device = next(iter(devices))
        _, response = self.result(v2_store, submit(v2_store, "fetch-data", data="sms,whatsapp_messages", device=device))
        feeds = response.json()
        assert set(feeds) == {"sms", "whatsapp_messages"} and feeds["sms"]

    def test_wrong_password_fails_the_log_in_task(self, v2_store):
        task, response = self.result(v2_store, submit(v2_store, "log-in", password="wrong-password"))
        assert task.state == "failed" and task.error == "invalid-credentials"
        assert response.json()["error"] == "invalid-credentials" and response.json()["success"] is False

    def test_two_factor_flow(self, v2_store):
        account = "2fa-user@example.com"
        _, response = self.result(v2_store, submit(v2_store, "log-in", account=account, password="pw"))
        body = response.json()
        assert "2fa-required" in body["error"] and body["data"]["trustedDevices"]
        challenge = body["data"]["trustedDevices"][0]
        _, response = self.result(v2_store, submit(v2_store, "perform-2fa-challenge", account=account, challenge=challenge))
        assert response.json()["success"] is True
        task, _ = self.result(v2_store, submit(v2_store, "submit-2fa-challenge", account=account, code="000000"))
        assert task.error == "code-invalid"
        _, response = self.result(v2_store, submit(v2_store, "submit-2fa-challenge", account=account, code="123456"))
        assert response.json()["message"] == "Log-in successful"
        task, _ = self.result(v2_store, submit(v2_store, "list-devices", account=account))
        assert task.state == "succeeded"
