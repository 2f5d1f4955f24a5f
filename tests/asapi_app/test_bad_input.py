"""v2 inputs that reached the database, and methods: a 4xx in the v2 envelope, never a 500 or HTML."""
import pytest

from tasks_app.models import Source, Task

from .test_endpoints import ACCOUNT, assert_v2_error, register, submit

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/register-account/", "/deregister-account/"])
def test_a_nul_byte_in_a_username_is_a_400(v2, path):
    response = v2.post(path, {"service": "iCloud", "username": "nul\x00@example.com"})
    assert_v2_error(response, "username", "invalid")
    assert not Source.objects.filter(identifier__startswith="nul").exists()


@pytest.mark.parametrize("params", [{"account": "nul\x00@example.com", "password": "x"},
                                    {"password": "pass\x00word"}])
def test_a_nul_byte_in_any_submit_parameter_is_a_400(v2, params):
    register(v2)
    field = next(name for name, value in params.items() if "\x00" in value)
    assert_v2_error(submit(v2, "log-in", **params), field, "invalid")
    assert Task.objects.count() == 0


def test_a_username_longer_than_an_account_holds_is_a_400(v2):
    assert_v2_error(register(v2, username="u" * 256 + "@example.com"), "username", "invalid")
    assert_v2_error(submit(v2, "log-in", account="u" * 256, password="x"), "account", "invalid")
    assert register(v2, username="u" * 243 + "@example.com").status_code == 200  # 255 characters


@pytest.mark.parametrize("method,path", [("get", "/submit-task/"), ("get", "/register-account/"),
                                         ("put", "/task-status/"), ("post", "/account/"), ("delete", "/stream/")])
def test_a_wrong_method_is_a_405_in_the_envelope(v2, method, path):
    response = getattr(v2, method)(path)
    body = assert_v2_error(response, "__all__", "method_not_allowed", status=405)
    assert body["success"] is False and response["Allow"]


def test_the_right_method_still_works(v2):
    assert register(v2).json() == {"success": True}
    assert submit(v2, "log-in", account=ACCOUNT, password="joshua").status_code == 200


def test_django_s_own_400s_come_in_the_v2_envelope(v2, settings):
    too_many = {f"f{n}": "x" for n in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1)}
    for response in (
        v2.post("/submit-task/", too_many),
        v2.post("/register-account/", "--x\r\n", content_type="multipart/form-data"),  # no boundary
        v2.post("/register-account/", {"username": "u" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)}),
    ):
        assert response.status_code == 400, response.content
        assert response["Content-Type"] == "application/json"
        body = response.json()
        assert body["success"] is False and body["errors"]["__all__"][0][1] == "invalid"
