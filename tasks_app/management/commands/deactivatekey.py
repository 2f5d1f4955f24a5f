"""`manage.py deactivatekey KEY_ID`: the key stops authenticating at once (as
`POST /keys/{id}` with `{"state": "deactivated"}`); its organisation, users and data stay."""
from django.core.management.base import BaseCommand

from tasks_app.choices import KeyState
from tasks_app.services.organisations import update_key

from . import _keys


class Command(BaseCommand):
    help = "Deactivate a key: its token stops working at once."

    def add_arguments(self, parser):
        parser.add_argument("key_id", type=int, metavar="KEY_ID")

    def handle(self, *args, key_id, **options):
        key = _keys.key(key_id)
        if key.state == KeyState.DEACTIVATED:
            self.stdout.write(f"Key {key.id} was already deactivated.")
            return
        update_key(key=key, state=KeyState.DEACTIVATED)
        self.stdout.write(f"Deactivated key {key.id} of organisation {key.organisation_id}.")
