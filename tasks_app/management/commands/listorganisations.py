"""`manage.py listorganisations`: every organisation with its state and keys (active / all)."""
from django.core.management.base import BaseCommand
from django.db.models import Count, Q

from tasks_app.choices import KeyState
from tasks_app.models import Organisation

from . import _keys


class Command(BaseCommand):
    help = "List organisations with their number of keys."

    def handle(self, *args, **options):
        organisations = Organisation.objects.annotate(
            keys_total=Count("keys"), keys_active=Count("keys", filter=Q(keys__state=KeyState.ACTIVE))
        ).order_by("id")
        _keys.table(self.stdout, ["ID", "NAME", "STATE", "KEYS ACTIVE", "KEYS", "CREATED"], [
            [o.id, o.name, o.state, o.keys_active, o.keys_total, o.date_created.isoformat(timespec="seconds")]
            for o in organisations
        ])
