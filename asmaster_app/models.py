"""asmaster's own rows: a subscribed account (one v2 account Source) and its devices.

Both have small stable integer ids: the 2.x listener stores `account_id` and `device_id` in
MySQL `int(11)` columns.
"""
from django.db import models

from tasks_app.models import Key, Organisation, Source


class AccountState(models.TextChoices):
    PENDING = "pending"  # a log-in or 2FA step is running
    TWO_FA_REQUIRED = "2fa-required"
    ACTIVE = "active"
    FAILED = "failed"  # the last log-in failed (`error`): resubscribe the account
    UNSUBSCRIBED = "unsubscribed"


class DeviceState(models.TextChoices):
    AVAILABLE = "available"  # listed, not subscribed
    SUBSCRIBED = "subscribed"
    UNSUBSCRIBED = "unsubscribed"


class Account(models.Model):
    id = models.AutoField(primary_key=True)
    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="+")
    key = models.ForeignKey(Key, on_delete=models.CASCADE, related_name="+")
    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="+")
    service = models.CharField(max_length=50)
    username = models.CharField(max_length=255)
    state = models.CharField(max_length=20, choices=AccountState.choices, default=AccountState.PENDING)
    error = models.CharField(max_length=100, null=True, blank=True)
    trusted_devices = models.JSONField(default=list, blank=True)
    # The engine task of the running log-in / 2FA / device listing step, and its action.
    pending_task = models.UUIDField(null=True, blank=True)
    pending_action = models.CharField(max_length=50, blank=True, default="")
    date_created = models.DateTimeField(auto_now_add=True)
    date_updated = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["key", "service", "username"], name="asmaster_account_unique"),
        ]


class Device(models.Model):
    id = models.AutoField(primary_key=True)
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="devices")
    device_tag = models.CharField(max_length=100)
    name = models.CharField(max_length=255, blank=True, default="")
    model = models.CharField(max_length=100, blank=True, default="")
    state = models.CharField(max_length=20, choices=DeviceState.choices, default=DeviceState.AVAILABLE)
    since = models.DateTimeField(null=True, blank=True)  # the next poll fetches data since this
    date_next_poll = models.DateTimeField(null=True, blank=True)
    date_last_poll = models.DateTimeField(null=True, blank=True)
    last_task = models.UUIDField(null=True, blank=True)  # the last fetch-data task
    files_requested = models.BooleanField(default=True)  # its download-file tasks were created
    date_created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "device_tag"], name="asmaster_device_unique"),
        ]
