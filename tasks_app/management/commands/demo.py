"""`manage.py demo`: create the demo organisation once and print a ready-to-paste curl line.

The demo token is kept in `var/demo-token` (tokens are stored hashed, so this file is the only
place the plaintext lives); later runs reuse it. `RICLOUD_DEMO_TOKEN` fixes the token instead (at
least 16 printable characters, no spaces): the demo organisation gets a key with it if none has
it yet, and `var/demo-token` holds it, so scripts and tests can hard-code one token.
"""
import os

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from tasks_app.models import Key, hash_token
from tasks_app.services.organisations import create_key, create_organisation


class Command(BaseCommand):
    help = "Create the demo organisation (once) and print a curl line with its token."

    def add_arguments(self, parser):
        parser.add_argument("--migrate", action="store_true", help="Apply migrations first (one process, faster start).")

    def handle(self, *args, migrate=False, **options):
        if migrate:
            settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
            call_command("migrate", interactive=False, verbosity=0)
        path = settings.VAR_DIR / "demo-token"
        token = path.read_text().strip() if path.exists() else ""
        existing = Key.objects.filter(token_hash=hash_token(token)).first() if token else None
        fixed = os.environ.get("RICLOUD_DEMO_TOKEN", "").strip()
        if fixed:
            if len(fixed) < 16 or not fixed.isprintable() or " " in fixed:
                raise CommandError("RICLOUD_DEMO_TOKEN must be at least 16 printable characters without spaces.")
            if not Key.objects.filter(token_hash=hash_token(fixed)).exists():
                if existing is not None:  # the demo organisation exists: one more key, same data
                    create_key(organisation=existing.organisation, token=fixed)
                else:
                    create_organisation(name="Demo", token=fixed)
            token = fixed
        elif existing is None:
            _, key = create_organisation(name="Demo")
            token = key.plaintext_token
        if not path.exists() or path.read_text().strip() != token:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(token + "\n")
            os.chmod(path, 0o600)
        port = os.environ.get("PORT", "8000")
        self.stdout.write("")
        self.stdout.write("ricloud-server is starting. Try:")
        self.stdout.write(f"  curl http://127.0.0.1:{port}/organisation -H 'Authorization: Token {token}'")
        self.stdout.write("")
