"""The admin on the production web process (the Procfile's gunicorn + uvicorn workers): log-in with
its CSRF check, a list page, static files through WhiteNoise, and API answers without a session."""
import re

import pytest
import requests
from django.contrib.auth import get_user_model

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_admin_log_in_lists_and_static_files(start_web, e2e_key):
    get_user_model().objects.create_superuser("operator", "operator@example.com", "a-long-test-password")
    web = start_web()
    browser = requests.Session()
    login = browser.get(f"{web.url}/admin/login/", timeout=30)
    assert login.status_code == 200 and "text/html" in login.headers["Content-Type"]
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text).group(1)
    refused = requests.post(f"{web.url}/admin/login/", data={"username": "operator", "password": "x"}, timeout=30)
    assert refused.status_code == 403  # no CSRF cookie: Django's CSRF failure page
    answer = browser.post(f"{web.url}/admin/login/?next=/admin/tasks_app/key/", timeout=30, data={
        "csrfmiddlewaretoken": token, "username": "operator", "password": "a-long-test-password",
        "next": "/admin/tasks_app/key/"}, headers={"Referer": f"{web.url}/admin/login/"})
    assert answer.status_code == 200 and answer.url.endswith("/admin/tasks_app/key/")
    assert f"/admin/tasks_app/key/{e2e_key.id}/change/" in answer.text

    css = requests.get(f"{web.url}/static/admin/css/base.css", timeout=30)
    assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css") and len(css.content) > 1000

    api = requests.get(f"{web.url}/key", headers={"Authorization": f"Token {e2e_key.plaintext_token}"}, timeout=30)
    assert api.status_code == 200 and "Set-Cookie" not in api.headers
    missing = requests.get(f"{web.url}/static/no-such-file.css", timeout=30)
    assert missing.status_code == 404 and missing.json()["error"] == "not-found"
