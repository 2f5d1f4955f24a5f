"""Credentials at rest are Fernet tokens (tasks_app/sealing.py): session credentials, v2 secret
task parameters, webhook secrets and storage credentials. Existing plaintext is sealed; what is no
longer needed is dropped: the credentials of sessions that already left `pending`, the secret
parameters of v2 tasks that already ended, and the webhook secret that `webhook_config.test`
events carried in their data (GET /events showed it)."""
import json

from django.db import migrations

import tasks_app.sealing

# The v2 task parameters that are secrets, by action (asapi_app/catalogue.py marks them).
V2_SECRETS = {"log-in": ("password",), "submit-2fa-challenge": ("code",)}
TERMINAL = ("succeeded", "failed")


def _json(value):
    return json.loads(value) if isinstance(value, str) else value


def _rows(schema_editor, sql, params=()):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _execute(schema_editor, sql, params):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(sql, params)


def seal_existing(apps, schema_editor):
    from tasks_app.sealing import seal

    for session_id, state, payload in _rows(schema_editor, "SELECT id, state, payload FROM tasks_app_session"):
        if state == "pending":
            _execute(schema_editor, "UPDATE tasks_app_session SET credentials = %s WHERE id = %s",
                     [seal(_json(payload) or {}), session_id])

    actions = tuple(V2_SECRETS)
    marks = ", ".join(["%s"] * len(actions))
    for task_id, type_, state, payload in _rows(
        schema_editor,
        f"SELECT id, type, state, payload FROM tasks_app_task WHERE api_version = 2 AND type IN ({marks})",
        actions,
    ):
        payload = _json(payload) or {}
        secrets = {name: payload.pop(name) for name in V2_SECRETS[type_] if name in payload}
        sealed = seal(secrets) if secrets and state not in TERMINAL else None
        _execute(schema_editor, "UPDATE tasks_app_task SET payload = %s, secrets = %s WHERE id = %s",
                 [json.dumps(payload), sealed, task_id])

    for config_id, secret in _rows(schema_editor, "SELECT id, secret FROM tasks_app_webhookconfig"):
        _execute(schema_editor, "UPDATE tasks_app_webhookconfig SET secret = %s WHERE id = %s", [seal(secret), config_id])

    for config_id, credentials in _rows(schema_editor, "SELECT id, credentials FROM tasks_app_storageconfig"):
        credentials = _json(credentials)
        _execute(schema_editor, "UPDATE tasks_app_storageconfig SET credentials = %s WHERE id = %s",
                 [seal(credentials) if credentials else None, config_id])

    for event_id, data in _rows(schema_editor, "SELECT id, data FROM tasks_app_event WHERE type = 'webhook_config'"):
        data = _json(data)
        if isinstance(data, dict) and data.get("secret") is not None:
            _execute(schema_editor, "UPDATE tasks_app_event SET data = %s WHERE id = %s",
                     [json.dumps({**data, "secret": None}), event_id])


def open_existing(apps, schema_editor):
    """Back to plaintext (what the previous schema holds); dropped credentials stay dropped."""
    from tasks_app.sealing import unseal

    for session_id, credentials in _rows(schema_editor, "SELECT id, credentials FROM tasks_app_session"):
        _execute(schema_editor, "UPDATE tasks_app_session SET payload = %s WHERE id = %s",
                 [json.dumps(unseal(credentials) or {}), session_id])
    for task_id, payload, secrets in _rows(
        schema_editor, "SELECT id, payload, secrets FROM tasks_app_task WHERE secrets IS NOT NULL"
    ):
        _execute(schema_editor, "UPDATE tasks_app_task SET payload = %s WHERE id = %s",
                 [json.dumps({**(_json(payload) or {}), **unseal(secrets)}), task_id])
    for config_id, secret in _rows(schema_editor, "SELECT id, secret FROM tasks_app_webhookconfig"):
        _execute(schema_editor, "UPDATE tasks_app_webhookconfig SET secret = %s WHERE id = %s", [unseal(secret), config_id])
    for config_id, credentials in _rows(schema_editor, "SELECT id, credentials FROM tasks_app_storageconfig"):
        _execute(schema_editor, "UPDATE tasks_app_storageconfig SET credentials = %s WHERE id = %s",
                 [json.dumps(unseal(credentials) or {}), config_id])


class Migration(migrations.Migration):

    dependencies = [
        ("tasks_app", "0007_webhook_schedule"),
    ]

    operations = [
        migrations.AddField(
            model_name="session",
            name="credentials",
            field=tasks_app.sealing.SealedField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="task",
            name="secrets",
            field=tasks_app.sealing.SealedField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name="webhookconfig",
            name="secret",
            field=tasks_app.sealing.SealedField(),
        ),
        migrations.AlterField(
            model_name="storageconfig",
            name="credentials",
            field=tasks_app.sealing.SealedField(blank=True, null=True),
        ),
        migrations.RunPython(seal_existing, open_existing),
        migrations.RemoveField(
            model_name="session",
            name="payload",
        ),
    ]

