"""Result acknowledgement: `available → consumed`, one row or a batch."""
from django.db import transaction
from django.utils import timezone

from ..choices import RESULT_TRANSITIONS, ResultState
from ..errors import APIError
from ..models import Key, Result, Task

__all__ = ["ack_result", "ack_results", "MAX_ACK_BATCH"]

MAX_ACK_BATCH = 1000


def ack_result(*, result: Result) -> Result:
    """Mark consumed; acknowledging a consumed or expired result changes nothing."""
    now = timezone.now()
    won = Result.objects.filter(id=result.id, state__in=RESULT_TRANSITIONS[ResultState.CONSUMED]).update(
        state=ResultState.CONSUMED, date_consumed=now
    )
    if won:
        result.state, result.date_consumed = ResultState.CONSUMED, now
        Task.objects.filter(id=result.task_id).update(results_consumed=True)
    return result


def ack_results(*, key: Key, ids: list) -> list[Result]:
    """Acknowledge a batch atomically: every id must be a result of the caller's organisation."""
    now = timezone.now()
    with transaction.atomic():
        results = list(Result.objects.select_for_update(no_key=True).filter(organisation_id=key.organisation_id, id__in=ids))
        missing = sorted({str(i) for i in ids} - {str(r.id) for r in results})
        if missing:
            raise APIError(
                "not-found", "Some results do not exist.", status_code=404, params={"ids": [f"No result {i}." for i in missing]}
            )
        Result.objects.filter(id__in=[r.id for r in results], state=ResultState.AVAILABLE).update(
            state=ResultState.CONSUMED, date_consumed=now
        )
        Task.objects.filter(id__in={r.task_id for r in results}).update(results_consumed=True)
    for result in results:
        if result.state == ResultState.AVAILABLE:
            result.state, result.date_consumed = ResultState.CONSUMED, now
    return sorted(results, key=lambda r: r.id, reverse=True)
