"""Shared by the key and organisation commands: lookups that fail as a CommandError, token checks
and the table printer."""
from django.core.management.base import CommandError

from tasks_app.models import Key, Organisation, hash_token


def organisation(organisation_id) -> Organisation:
    try:
        return Organisation.objects.get(id=organisation_id)
    except Organisation.DoesNotExist:
        raise CommandError(f"No organisation {organisation_id} (manage.py listorganisations lists them).") from None


def key(key_id) -> Key:
    try:
        return Key.objects.select_related("organisation").get(id=key_id)
    except Key.DoesNotExist:
        raise CommandError(f"No key {key_id} (manage.py listkeys lists them).") from None


def check_token(token: str | None) -> None:
    """A given token: at least 16 printable characters without spaces, and not already a key's."""
    if token is None:
        return
    if len(token) < 16 or not token.isprintable() or " " in token:
        raise CommandError("--token must be at least 16 printable characters without spaces.")
    if Key.objects.filter(token_hash=hash_token(token)).exists():
        raise CommandError("A key with this token already exists.")


def table(stdout, header: list[str], rows: list[list]) -> None:
    cells = [header] + [["" if value is None else str(value) for value in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        stdout.write("  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip())


def print_token(stdout, key: Key) -> None:
    stdout.write(f"v2 aschannel stream (ricloud.ini [stream] stream_endpoint): {key.stream}")
    stdout.write(f"v2 retrieval protocol: {key.retrieval_protocol}")
    stdout.write("Token (ricloud.ini [auth] token; shown only now):")
    stdout.write(key.plaintext_token)
