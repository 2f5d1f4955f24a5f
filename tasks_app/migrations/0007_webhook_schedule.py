"""Webhook retries scheduled on the delivery row (`next_attempt_at`), swept by the maintenance
loop, instead of Celery countdown messages."""
from django.db import migrations, models
from django.utils import timezone


def schedule_pending(apps, schema_editor):
    # Deliveries waiting on a countdown message from before this migration are due now: the
    # sweep sends them, and that old message, when it runs, finds its slot already taken.
    WebhookDelivery = apps.get_model("tasks_app", "WebhookDelivery")
    WebhookDelivery.objects.filter(state="pending").update(next_attempt_at=timezone.now())


class Migration(migrations.Migration):

    dependencies = [
        ("tasks_app", "0006_append_only_counts"),
    ]

    operations = [
        migrations.AddField(
            model_name="webhookdelivery",
            name="max_attempts",
            field=models.PositiveSmallIntegerField(default=5),
        ),
        migrations.AddField(
            model_name="webhookdelivery",
            name="next_attempt_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddIndex(
            model_name="webhookdelivery",
            index=models.Index(
                condition=models.Q(("state", "pending")), fields=["next_attempt_at"], name="webhook_delivery_due"
            ),
        ),
        migrations.RunPython(schedule_pending, migrations.RunPython.noop),
    ]
