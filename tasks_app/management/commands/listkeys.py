"""`manage.py listkeys [--organisation ID]`: every key (or one organisation's) with its state and v2
retrieval protocol and stream. No tokens: they are stored hashed (rotatekey issues a new one)."""
from django.core.management.base import BaseCommand

from tasks_app.models import Key

from . import _keys


class Command(BaseCommand):
    help = "List keys (without tokens: they are stored hashed)."

    def add_arguments(self, parser):
        parser.add_argument("--organisation", type=int, metavar="ID", help="Only this organisation's keys.")

    def handle(self, *args, organisation=None, **options):
        keys = Key.objects.select_related("organisation").order_by("id")
        if organisation is not None:
            keys = keys.filter(organisation=_keys.organisation(organisation))
        _keys.table(self.stdout, ["ID", "ORGANISATION", "NAME", "STATE", "RETRIEVAL", "STREAM", "CREATED"], [
            [key.id, key.organisation_id, key.organisation.name, key.state, key.retrieval_protocol, key.stream,
             key.date_created.isoformat(timespec="seconds")]
            for key in keys
        ])
