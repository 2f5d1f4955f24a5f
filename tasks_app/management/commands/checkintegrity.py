"""`manage.py checkintegrity`: rows whose parent is missing, for the foreign keys Postgres does not
enforce (the hot tables', tasks_app/models.py). Prints each relation checked with its count of
orphans; exits 1 if there is any."""
import sys

from django.core.management.base import BaseCommand

from tasks_app.services.integrity import orphans, unenforced


class Command(BaseCommand):
    help = "Check the relations the database does not enforce (the hot tables' foreign keys) for orphan rows."

    def handle(self, *args, **options):
        found = orphans()
        for model, field in unenforced():
            name = f"{model._meta.db_table}.{field.column}"
            self.stdout.write(f"{name} -> {field.related_model._meta.db_table}: {found.get(name, 0)} orphan(s)")
        if found:
            self.stderr.write(f"{sum(found.values())} orphan row(s) in {len(found)} relation(s).")
            sys.exit(1)
        self.stdout.write("No orphan rows.")
