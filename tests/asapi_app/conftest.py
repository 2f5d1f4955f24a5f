import pytest
from django.test import Client

from tasks_app.services.organisations import create_organisation


def v2_client(key) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Token {key.plaintext_token}")


@pytest.fixture
def v2(key):
    """A curl-shaped v2 client (form-encoded POSTs) for the aschannel key of `key`."""
    return v2_client(key)


@pytest.fixture
def store_key(org):
    _, key = create_organisation(name="Store", retrieval_protocol="asstore")
    return key


@pytest.fixture
def v2_store(store_key):
    return v2_client(store_key)
