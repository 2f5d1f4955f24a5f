"""Sources: the client's `Source.update` (`POST /sources/{id}`), whose one writable attribute is
`state` (docs/DECISIONS.md 134)."""
from django.db import transaction

from ..choices import SessionState, SourceState
from ..errors import APIError
from ..models import Session, Source

__all__ = ["update_source"]

# What the organisation may set, and from which states: `blocked` is an API admin's and stays.
DEACTIVATABLE = (SourceState.UNVALIDATED, SourceState.ACTIVE, SourceState.LOCKED)


def update_source(*, source: Source, state: str) -> Source:
    """`deactivated` forbids new sessions on the source; `active` lifts that again, back to
    `active` when one of its sessions is active, else `unvalidated` (no session has validated it).
    A compare-and-set: the row count says whether the source was in a state it may leave."""
    with transaction.atomic():
        if state == "deactivated":
            changed = Source.objects.filter(id=source.id, state__in=DEACTIVATABLE).update(state=SourceState.DEACTIVATED)
        else:
            validated = Session.objects.filter(source_id=source.id, state=SessionState.ACTIVE).exists()
            changed = Source.objects.filter(id=source.id, state=SourceState.DEACTIVATED).update(
                state=SourceState.ACTIVE if validated else SourceState.UNVALIDATED)
        source.refresh_from_db(fields=["state"])
    if not changed and source.state == SourceState.BLOCKED:
        raise APIError("invalid-parameter", "One or more parameters failed validation.",
                       params={"state": ["The source is blocked; only an administrator can change it."]})
    return source
