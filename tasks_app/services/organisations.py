"""Organisations and their keys."""
from django.db import transaction

from ..choices import RetrievalProtocol
from ..models import Key, Organisation, generate_token, hash_token

__all__ = ["create_organisation", "create_key", "rotate_key", "update_key"]


def create_key(*, organisation: Organisation, token: str | None = None, retrieval_protocol: str | None = None) -> Key:
    """A new key; its plaintext token is on `key.plaintext_token` and nowhere else."""
    token = token or generate_token()
    key = Key.objects.create(
        organisation=organisation,
        token_hash=hash_token(token),
        retrieval_protocol=retrieval_protocol or RetrievalProtocol.ASCHANNEL,
    )
    key.plaintext_token = token
    return key


def rotate_key(*, key: Key) -> Key:
    """Issue a new token; the old one stops working with this update."""
    token = generate_token()
    Key.objects.filter(id=key.id).update(token_hash=hash_token(token))
    key.refresh_from_db()
    key.plaintext_token = token
    return key


def update_key(*, key: Key, state: str | None = None, retrieval_protocol: str | None = None) -> Key:
    changes = {name: value for name, value in (("state", state), ("retrieval_protocol", retrieval_protocol)) if value}
    if changes:
        Key.objects.filter(id=key.id).update(**changes)
        key.refresh_from_db()
    return key


def create_organisation(
    *, name: str, token: str | None = None, retrieval_protocol: str | None = None
) -> tuple[Organisation, Key]:
    """Creating an organisation always creates its first key."""
    with transaction.atomic():
        organisation = Organisation.objects.create(name=name)
        key = create_key(organisation=organisation, token=token, retrieval_protocol=retrieval_protocol)
    return organisation, key
