"""`manage.py reencrypt`: encrypt every stored credential again under the first key of
RICLOUD_ENCRYPTION_KEYS, the step of a key rotation between adding the new key (first) and
removing the old one (README "Deployment").

Each row is rewritten by compare-and-set on its old token, so a credential changed or dropped
meanwhile (a config updated, a session initialised) is left as it now is. Safe to run again,
and while the server runs.
"""
from django.core.management.base import BaseCommand, CommandError

from tasks_app.sealing import UnreadableSecret, reseal, sealed_fields

BATCH = 500


class Command(BaseCommand):
    help = "Re-encrypt every sealed credential under the first key of RICLOUD_ENCRYPTION_KEYS."

    def handle(self, *args, **options):
        unreadable = 0
        for model, field in sealed_fields():
            rows = model.objects.exclude(**{f"{field.attname}__isnull": True})
            done, last = 0, None
            while True:
                page = rows.filter(pk__gt=last) if last is not None else rows
                batch = list(page.order_by("pk").values_list("pk", field.attname)[:BATCH])
                for pk, token in batch:
                    try:
                        fresh = reseal(token)
                    except UnreadableSecret:
                        unreadable += 1
                        self.stderr.write(f"{model.__name__} {pk}: {field.name} opens with none of the keys")
                        continue
                    done += model.objects.filter(pk=pk, **{field.attname: token}).update(**{field.attname: fresh})
                if len(batch) < BATCH:
                    break
                last = batch[-1][0]
            self.stdout.write(f"{model.__name__}.{field.name}: {done} re-encrypted")
        if unreadable:
            raise CommandError(f"{unreadable} credential(s) could not be decrypted with any configured key; "
                               "keep the key they were sealed with in RICLOUD_ENCRYPTION_KEYS.")
