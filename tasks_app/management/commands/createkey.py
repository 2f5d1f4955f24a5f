"""`manage.py createkey ORG_ID [--token TOKEN] [--retrieval-protocol aschannel|asstore]`: a new key of
an existing organisation; its token is printed alone on the last line (shown only now: tokens are
stored hashed)."""
from django.core.management.base import BaseCommand

from tasks_app.services.organisations import create_key

from . import _keys


class Command(BaseCommand):
    help = "Create a key for an organisation; the token is printed alone on the last line."

    def add_arguments(self, parser):
        parser.add_argument("organisation_id", type=int, metavar="ORG_ID")
        parser.add_argument("--token", help="Use this token instead of generating one (e.g. for fixtures).")
        parser.add_argument("--retrieval-protocol", choices=["aschannel", "asstore"], default="aschannel",
                            help="Where v2 results of this key go (default aschannel).")

    def handle(self, *args, organisation_id, token=None, retrieval_protocol="aschannel", **options):
        organisation = _keys.organisation(organisation_id)
        _keys.check_token(token)
        key = create_key(organisation=organisation, token=token, retrieval_protocol=retrieval_protocol)
        self.stdout.write(f"Created key {key.id} for organisation {organisation.id} ({organisation.name}).")
        _keys.print_token(self.stdout, key)
