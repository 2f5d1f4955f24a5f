"""Append-only task counts, a poll's open-task counter, lazily rendered events."""
from django.core.serializers.json import DjangoJSONEncoder
from django.db import migrations, models


def install_triggers(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    from tasks_app.services.counts import TRIGGER_SQL, rebuild_task_counts

    with schema_editor.connection.cursor() as cursor:
        cursor.execute(TRIGGER_SQL)
        rebuild_task_counts(cursor)


def remove_triggers(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for name in ("insert", "delete", "update"):
            schema_editor.execute(f"DROP TRIGGER IF EXISTS tasks_app_task_count_{name} ON tasks_app_task")


OPEN_TASKS_SQL = """
UPDATE tasks_app_poll SET open_tasks = (
    SELECT count(*) FROM tasks_app_task t
    WHERE t.poll_id = tasks_app_poll.id AND t.state IN ('pending', 'processing', 'suspended')
) WHERE state <> 'completed'
"""


class Migration(migrations.Migration):

    dependencies = [
        ("tasks_app", "0005_task_result_flags"),
    ]

    operations = [
        migrations.CreateModel(
            name="TaskCountDelta",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("organisation_id", models.BigIntegerField()),
                ("key_id", models.BigIntegerField()),
                ("state", models.CharField(max_length=20)),
                ("type", models.CharField(max_length=100)),
                ("source_type", models.CharField(max_length=100)),
                ("n", models.BigIntegerField()),
            ],
            options={"indexes": [models.Index(fields=["organisation_id"], name="taskcountdelta_org")]},
        ),
        migrations.AddField(
            model_name="poll",
            name="open_tasks",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AlterField(
            model_name="event",
            name="data",
            field=models.JSONField(blank=True, null=True, encoder=DjangoJSONEncoder),
        ),
        migrations.RunSQL(OPEN_TASKS_SQL, migrations.RunSQL.noop),
        migrations.RunPython(install_triggers, remove_triggers),
    ]
