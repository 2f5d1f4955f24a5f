"""Organisations and their keys."""
from django.db import transaction
from django.utils.text import slugify

from ..authcache import bump
from ..choices import RetrievalProtocol
from ..models import Key, Organisation, generate_token, hash_token
from .permissions import create_default_permissions

__all__ = ["create_organisation", "create_key", "rotate_key", "update_key", "update_organisation"]


def create_key(
    *,
    organisation: Organisation,
    token: str | None = None,
    retrieval_protocol: str | None = None,
    storage_config: int | None = None,
    webhook_config: int | None = None,
) -> Key:
    """A new key; its plaintext token is on `key.plaintext_token` and nowhere else."""
    token = token or generate_token()
    key = Key.objects.create(
        organisation=organisation,
        token_hash=hash_token(token),
        retrieval_protocol=retrieval_protocol or RetrievalProtocol.ASCHANNEL,
        storage_config_id=storage_config,
        webhook_config_id=webhook_config,
    )
    key.plaintext_token = token
    return key


def rotate_key(*, key: Key) -> Key:
    """Issue a new token; the old one stops working with this update."""
    token = generate_token()
    Key.objects.filter(id=key.id).update(token_hash=hash_token(token))
    bump()
    key.refresh_from_db()
    key.plaintext_token = token
    return key


def update_key(*, key: Key, **changes) -> Key:
    """Update `state`, `retrieval_protocol`, `storage_config` or `webhook_config` (ids or None)."""
    fields = {("%s_id" % name if name.endswith("_config") else name): value for name, value in changes.items()}
    if fields:
        Key.objects.filter(id=key.id).update(**fields)
        bump()
        key.refresh_from_db()
    return key


def update_organisation(*, organisation: Organisation, **changes) -> Organisation:
    """Update `name`, `storage_config_default` or `webhook_config_default` (ids or None)."""
    fields = {("%s_id" % name if name.endswith("_default") else name): value for name, value in changes.items()}
    if "name" in fields:
        fields["slug"] = slugify(fields["name"])[:200] or "organisation"
    if fields:
        Organisation.objects.filter(id=organisation.id).update(**fields)
        bump()
        organisation.refresh_from_db()
    return organisation


def create_organisation(
    *, name: str, token: str | None = None, retrieval_protocol: str | None = None
) -> tuple[Organisation, Key]:
    """Creating an organisation always creates its first key."""
    with transaction.atomic():
        organisation = Organisation.objects.create(name=name)
        create_default_permissions(organisation)
        key = create_key(organisation=organisation, token=token, retrieval_protocol=retrieval_protocol)
    return organisation, key
