"""Storage configs: where results are published, tested by a `storage_config.test` task."""
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ..authcache import bump
from ..choices import ConfigState, OrganisationState, ResultState
from ..errors import APIError
from ..models import Key, Organisation, Result, StorageConfig
from ..sealing import seal
from .configs import change_config, queue_config_test

__all__ = [
    "validate_storage_url",
    "create_storage_config",
    "update_storage_config",
    "mark_storage_tested",
    "expire_results",
]

def validate_storage_url(url: str) -> str:
    """`s3://bucket[/prefix]`, or `local:///path` inside one of RICLOUD_LOCAL_STORAGE_ROOTS."""
    parts = urlsplit(url)
    if parts.scheme == "s3" and parts.netloc:
        return url
    if parts.scheme == "local":
        path = Path(parts.netloc + parts.path).resolve()
        if path.is_absolute() and any(path.is_relative_to(Path(root).resolve()) for root in settings.RICLOUD_LOCAL_STORAGE_ROOTS):
            return url
        roots = ", ".join(settings.RICLOUD_LOCAL_STORAGE_ROOTS)
        raise APIError("invalid-parameter", "One or more parameters failed validation.",
                       params={"url": [f"local:// storage must lie under one of: {roots}."]})
    raise APIError("invalid-parameter", "One or more parameters failed validation.",
                   params={"url": ["Expected s3://<bucket>/<path> or local:///<path>."]})


def create_storage_config(*, key: Key, url: str, credentials: dict, signed_urls_enabled: bool = False,
                          signed_urls_expiry: int | None = None):
    with transaction.atomic():
        config = StorageConfig.objects.create(
            organisation_id=key.organisation_id, url=validate_storage_url(url),
            credentials=seal(credentials) if credentials else None,
            signed_urls_enabled=signed_urls_enabled, signed_urls_expiry=signed_urls_expiry,
        )
        task = queue_config_test(key=key, config=config)
    return config, task


def update_storage_config(*, key: Key, config: StorageConfig, **changes) -> StorageConfig:
    """Changing where or how results are stored makes the config `new` and retests it."""
    if "url" in changes:
        changes["url"] = validate_storage_url(changes["url"])
    if "credentials" in changes:
        changes["credentials"] = seal(changes["credentials"]) if changes["credentials"] else None
    return change_config(key=key, config=config, **changes)



def mark_storage_tested(*, config: StorageConfig, ok: bool) -> None:
    """Record a test; the first valid config activates its organisation and becomes the default."""
    with transaction.atomic():
        StorageConfig.objects.filter(id=config.id).exclude(state=ConfigState.DEACTIVATED).update(
            state=ConfigState.VALID if ok else ConfigState.INVALID
        )
        if ok:
            organisations = Organisation.objects.filter(id=config.organisation_id)
            organisations.filter(storage_config_default__isnull=True).update(storage_config_default=config)
            organisations.filter(state=OrganisationState.UNCONFIGURED).update(state=OrganisationState.ACTIVE)
            bump()


def expire_results(*, delete, now=None, limit: int = 1000) -> int:
    """Delete server-owned results past their retention: `expired` with `date_deleted`.
    Results in customers' own storage are never touched."""
    now = now or timezone.now()
    cutoff = now - timezone.timedelta(seconds=settings.RICLOUD_RESULT_RETENTION_SECONDS)
    due = list(
        Result.objects.filter(storage_config__isnull=True, date_created__lt=cutoff)
        .exclude(state=ResultState.EXPIRED)
        .values_list("id", "url")[:limit]
    )
    for result_id, url in due:
        delete(url)
        Result.objects.filter(id=result_id).update(state=ResultState.EXPIRED, date_deleted=now, content=None)
    return len(due)
