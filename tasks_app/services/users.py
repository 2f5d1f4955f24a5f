"""Users: get-or-create by identifier for a key, and updates."""
from django.db import IntegrityError, transaction

from ..errors import APIError
from ..models import Key, User

__all__ = ["get_or_create_user", "update_user"]


def get_or_create_user(*, key: Key, identifier: str) -> tuple[User, bool]:
    """ricloud-py calls `User.create` on every run, so an existing identifier returns its user."""
    return User.objects.get_or_create(
        key=key, identifier=identifier, defaults={"organisation_id": key.organisation_id}
    )


def update_user(*, user: User, identifier: str | None = None, state: str | None = None) -> User:
    changes = {name: value for name, value in (("identifier", identifier), ("state", state)) if value is not None}
    if changes:
        try:
            with transaction.atomic():
                User.objects.filter(id=user.id).update(**changes)
        except IntegrityError:
            raise APIError(
                "invalid-parameter",
                "Another user of this key already has that identifier.",
                params={"identifier": ["Already in use for this key."]},
            ) from None
        user.refresh_from_db()
    return user
