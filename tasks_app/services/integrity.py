"""The relations the database does not enforce (the hot tables' foreign keys, models.py), checked.

`orphans()` counts, for each such foreign key, the rows whose parent does not exist. The engine
never writes one (it writes these rows from parents it holds, and deletions cascade through
Django's collector); `manage.py checkintegrity` and the concurrency tests hold it to that.
"""
from django.apps import apps
from django.db import connection

__all__ = ["unenforced", "orphans"]


def unenforced() -> list:
    """Every (model, foreign key) of the project's apps whose constraint is not in the database,
    the automatic many-to-many link tables included."""
    found = []
    for model in apps.get_app_config("tasks_app").get_models(include_auto_created=True):
        for field in model._meta.concrete_fields:
            if (field.many_to_one or field.one_to_one) and not field.db_constraint:
                found.append((model, field))
    return found


def orphans() -> dict[str, int]:
    """`table.column` → rows whose parent row is missing (only the foreign keys that have some)."""
    counts = {}
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        for model, field in unenforced():
            parent = field.related_model._meta
            target = field.target_field.column
            table, column = model._meta.db_table, field.column
            cursor.execute(
                f"SELECT count(*) FROM {quote(table)} c WHERE c.{quote(column)} IS NOT NULL AND NOT EXISTS"
                f" (SELECT 1 FROM {quote(parent.db_table)} p WHERE p.{quote(target)} = c.{quote(column)})"
            )
            missing = cursor.fetchone()[0]
            if missing:
                counts[f"{table}.{column}"] = missing
    return counts
