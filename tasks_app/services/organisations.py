"""Organisations and their keys."""
from django.db import transaction

from ..models import Key, Organisation, generate_token, hash_token

__all__ = ["create_organisation", "create_key"]


def create_key(*, organisation: Organisation, token: str | None = None) -> Key:
    """A new key; its plaintext token is on `key.plaintext_token` and nowhere else."""
    token = token or generate_token()
    key = Key.objects.create(organisation=organisation, token_hash=hash_token(token))
    key.plaintext_token = token
    return key


def create_organisation(*, name: str, token: str | None = None) -> tuple[Organisation, Key]:
    """Creating an organisation always creates its first key."""
    with transaction.atomic():
        organisation = Organisation.objects.create(name=name)
        key = create_key(organisation=organisation, token=token)
    return organisation, key
