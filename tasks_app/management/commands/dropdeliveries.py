"""`manage.py dropdeliveries [--older-than SECONDS | --all] [--stream NAME] [--organisation ID]`.

Drops pending aschannel deliveries (tasks_app/services/deliveries.py): by default those past
RICLOUD_DELIVERY_RETENTION_SECONDS and those whose result expired, as the maintenance loop does;
`--older-than` sets the age, `--all` drops every pending one of the stream / organisation given
(or of all streams). Prints how many it dropped.
"""
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from tasks_app.services.deliveries import drop_deliveries


class Command(BaseCommand):
    help = "Drop stale pending aschannel (v2 stream) deliveries, so that clients are not sent them again."

    def add_arguments(self, parser):
        age = parser.add_mutually_exclusive_group()
        age.add_argument("--older-than", type=float, metavar="SECONDS",
                         help="Drop those created more than SECONDS ago (default RICLOUD_DELIVERY_RETENTION_SECONDS).")
        age.add_argument("--all", action="store_true", help="Drop every pending delivery, whatever its age.")
        parser.add_argument("--stream", help="Only this stream (e.g. stream-12: GET /account/ `stream`).")
        parser.add_argument("--organisation", type=int, metavar="ID", help="Only this organisation's streams.")

    def handle(self, *args, older_than=None, all=False, stream=None, organisation=None, **options):
        if all:
            older_than = None
        elif older_than is None:
            older_than = settings.RICLOUD_DELIVERY_RETENTION_SECONDS
            if older_than <= 0:
                raise CommandError("RICLOUD_DELIVERY_RETENTION_SECONDS is 0 (keep until consumed): "
                                   "give --older-than SECONDS or --all.")
        elif older_than < 0:
            raise CommandError("--older-than must be 0 or more seconds.")
        dropped = drop_deliveries(older_than=older_than, stream=stream, organisation_id=organisation,
                                  result_gone=not all)
        self.stdout.write(f"Dropped {dropped} pending deliver{'y' if dropped == 1 else 'ies'}.")
