"""`manage.py createorganisation NAME [--token TOKEN]`: prints the new key's v2 stream name and
retrieval protocol, then its token alone on the last line."""
from django.core.management.base import BaseCommand, CommandError

from tasks_app.models import Key, hash_token
from tasks_app.services.organisations import create_organisation


class Command(BaseCommand):
    help = "Create an organisation and its first key; the token is printed alone on the last line."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--token", help="Use this token instead of generating one (e.g. for fixtures).")
        parser.add_argument(
            "--retrieval-protocol", choices=["aschannel", "asstore"], default="aschannel",
            help="Where v2 results of this key go (default aschannel).",
        )

    def handle(self, *args, name, token=None, retrieval_protocol="aschannel", **options):
        if token is not None and (len(token) < 16 or not token.isprintable() or " " in token):
            raise CommandError("--token must be at least 16 printable characters without spaces.")
        if token and Key.objects.filter(token_hash=hash_token(token)).exists():
            raise CommandError("A key with this token already exists.")
        organisation, key = create_organisation(name=name, token=token, retrieval_protocol=retrieval_protocol)
        self.stdout.write(f"Created organisation {organisation.id} ({organisation.name}) with key {key.id}.")
        self.stdout.write(f"v2 aschannel stream (ricloud.ini [stream] stream_endpoint): {key.stream}")
        self.stdout.write(f"v2 retrieval protocol: {key.retrieval_protocol}")
        self.stdout.write("Token (ricloud.ini [auth] token; shown only now):")
        self.stdout.write(key.plaintext_token)
