"""`manage.py reset`: the test-backend reset (tasks_app/services/reset.py), whatever
RICLOUD_RESET_ENABLED says (a shell on the server can clear the database anyway)."""
import json

from django.core.management.base import BaseCommand, CommandError

from tasks_app.services.reset import reset_data


class Command(BaseCommand):
    help = ("Delete every task, poll, session, user, source, result (and its stored file), event, config and "
            "delivery, the queued messages and the server's Redis keys; keep organisations and their keys.")

    def add_arguments(self, parser):
        parser.add_argument("--noinput", "--no-input", action="store_false", dest="interactive",
                            help="Do not ask for confirmation.")

    def handle(self, *args, interactive=True, **options):
        if interactive:
            answer = input("This deletes all data but organisations and keys. Type 'yes' to continue: ")
            if answer.strip().lower() != "yes":
                raise CommandError("Reset cancelled.")
        outcome = reset_data()
        self.stdout.write(json.dumps(outcome, indent=2, sort_keys=True))
