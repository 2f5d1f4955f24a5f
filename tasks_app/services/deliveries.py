"""Stale aschannel deliveries: dropped after a retention, by an operator, or by the customer.

A Delivery stays pending until the client reports it consumed, so a reconnecting client gets
everything it has not consumed. A 2.x client that no longer knows those task ids (it was
restarted) sleeps one second per unknown id before ignoring it, so an old backlog costs every
new client seconds. Pending deliveries older than RICLOUD_DELIVERY_RETENTION_SECONDS (0: never)
are dropped by the workers' maintenance loop; so are those whose result is gone (expired: the
stream could not read it anyway). `manage.py dropdeliveries` and `POST /drop-deliveries/` drop
them on demand. Dropping deletes the delivery row only: the task, its state and its result (until
the result's own retention) stay, readable through v3 and `/task-status/`.
"""
from datetime import timedelta
from functools import reduce
from operator import or_

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from ..choices import DeliveryState, ResultState
from ..models import Delivery

__all__ = ["drop_deliveries", "drop_stale_deliveries"]

BATCH = 1000


def drop_deliveries(*, older_than: float | None = None, stream: str | None = None, organisation_id=None,
                    task_ids=None, result_gone: bool = False, now=None, limit: int | None = None) -> int:
    """Delete pending deliveries (of `stream` / `organisation_id` / `task_ids` when given) created
    more than `older_than` seconds ago (None: any age), or, with `result_gone`, also those whose
    result has expired; in batches, at most `limit`. Returns how many were dropped."""
    now = now or timezone.now()
    pending = Delivery.objects.filter(state=DeliveryState.PENDING)
    if stream is not None:
        pending = pending.filter(stream=stream)
    if organisation_id is not None:
        pending = pending.filter(organisation_id=organisation_id)
    if task_ids is not None:
        pending = pending.filter(task_id__in=list(task_ids))
    conditions = []
    if older_than is not None:
        conditions.append(Q(date_created__lt=now - timedelta(seconds=older_than)))
    if result_gone:
        conditions.append(Q(result__state=ResultState.EXPIRED))
    if conditions:
        pending = pending.filter(reduce(or_, conditions))
    dropped = 0
    while limit is None or dropped < limit:
        size = BATCH if limit is None else min(BATCH, limit - dropped)
        ids = list(pending.order_by("id").values_list("id", flat=True)[:size])
        if not ids:
            break
        # Only rows still pending: one consumed meanwhile keeps its state.
        dropped += Delivery.objects.filter(id__in=ids, state=DeliveryState.PENDING).delete()[0]
        if len(ids) < size:
            break
    return dropped


def drop_stale_deliveries(now=None) -> int:
    """The maintenance step: pending deliveries past RICLOUD_DELIVERY_RETENTION_SECONDS, and those
    whose result expired (at most 10 batches a pass: the next pass goes on)."""
    retention = settings.RICLOUD_DELIVERY_RETENTION_SECONDS
    return drop_deliveries(older_than=retention if retention > 0 else None, result_gone=True, now=now,
                           limit=10 * BATCH)
