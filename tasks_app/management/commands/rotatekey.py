"""`manage.py rotatekey KEY_ID`: a new token for the key (as `POST /keys/{id}/rotate`); the old one
stops working at once. The new token is printed alone on the last line."""
from django.core.management.base import BaseCommand, CommandError

from tasks_app.choices import KeyState
from tasks_app.services.organisations import rotate_key

from . import _keys


class Command(BaseCommand):
    help = "Replace a key's token; the old token stops working at once. The new one is printed on the last line."

    def add_arguments(self, parser):
        parser.add_argument("key_id", type=int, metavar="KEY_ID")

    def handle(self, *args, key_id, **options):
        key = _keys.key(key_id)
        if key.state != KeyState.ACTIVE:
            raise CommandError(f"Key {key.id} is {key.state}: only an active key is rotated.")
        key = rotate_key(key=key)
        self.stdout.write(f"Rotated key {key.id} of organisation {key.organisation_id}: the old token no longer works.")
        self.stdout.write("New token (shown only now):")
        self.stdout.write(key.plaintext_token)
