"""Shared fixtures: organisations with keys, and API clients authenticated as them."""
import json
import os

import pytest
from cryptography.fernet import Fernet
from django.conf import settings
from rest_framework.test import APIClient

from tasks_app.services.organisations import create_organisation

# Credentials are stored sealed: one encryption key per run (unless one is given), in the settings
# already loaded and in the environment that the e2e workers inherit.
os.environ.setdefault("RICLOUD_ENCRYPTION_KEYS", Fernet.generate_key().decode())
settings.RICLOUD_ENCRYPTION_KEYS = [key for key in os.environ["RICLOUD_ENCRYPTION_KEYS"].split(",") if key]


class Client(APIClient):
    """Sends JSON bodies the way ricloud-py does: a str body, no Content-Type header."""

    def post_json(self, path, data=None, **extra):
        body = json.dumps(data)
        return self.generic("POST", path, body, content_type="", **extra)


@pytest.fixture
def org(db):
    organisation, key = create_organisation(name="Acme")
    return organisation, key


@pytest.fixture
def key(org):
    return org[1]


@pytest.fixture
def api(key):
    client = Client()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key.plaintext_token}")
    return client


@pytest.fixture
def other_api(db):
    """A client of a second organisation, for isolation checks."""
    _, key = create_organisation(name="Other")
    client = Client()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key.plaintext_token}")
    client.key = key
    return client


@pytest.fixture
def anon(db):
    return Client()
