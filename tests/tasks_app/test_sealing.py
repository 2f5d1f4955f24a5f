"""Secrets at rest (tasks_app/sealing.py): credentials are stored sealed, used, then dropped;
keys rotate; the server refuses to start without a key outside the embedded default."""
import json
import os
import stat
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from tasks_app.ids import uuid7
from tasks_app.models import Event, Session, StorageConfig, Task, User, WebhookConfig
from tasks_app.sealing import (
    UnreadableSecret,
    check_encryption_keys,
    is_token,
    require_keys,
    seal,
    sealed_fields,
    unseal,
)
from tasks_app.services.sessions import create_session, expire_session
from tasks_app.services.transitions import claim_task
from workers.runner import run

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "john.appleseed@reincubate.com"


@pytest.fixture
def user(key):
    return User.objects.create(organisation=key.organisation, key=key, identifier="u")


def stored(model, field, pk):
    """The column as the database holds it."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {field} FROM {model._meta.db_table} WHERE id = %s",
                       [model._meta.pk.get_db_prep_value(pk, connection)])
        return cursor.fetchone()[0]


class TestSealing:
    def test_a_sealed_value_is_a_token_that_opens_to_the_value(self):
        token = seal({"password": "hunter2"})
        assert is_token(token) and "hunter2" not in token
        assert unseal(token) == {"password": "hunter2"}
        assert seal({"password": "hunter2"}) != token  # a fresh IV every time
        assert unseal(None) is None

    @pytest.mark.django_db
    def test_a_sealed_column_refuses_plaintext(self, key):
        with pytest.raises(ValueError, match="WebhookConfig.secret stores sealed values only") as raised, \
                transaction.atomic():
            WebhookConfig.objects.create(organisation=key.organisation, url="https://example.com", secret="whsec_plain")
        assert "whsec_plain" not in str(raised.value)
        assert not WebhookConfig.objects.exists()

    def test_every_credential_column_is_sealed(self):
        assert {(model.__name__, field.name) for model, field in sealed_fields()} == {
            ("Session", "credentials"), ("Task", "secrets"), ("WebhookConfig", "secret"),
            ("StorageConfig", "credentials"),
        }

    def test_a_token_of_another_key_is_unreadable_and_says_so_without_the_value(self):
        foreign = Fernet(Fernet.generate_key()).encrypt(b'{"password": "hunter2"}').decode()
        with pytest.raises(UnreadableSecret, match="RICLOUD_ENCRYPTION_KEYS") as raised:
            unseal(foreign)
        assert "hunter2" not in str(raised.value)


class TestKeys:
    def test_rotation_first_key_encrypts_every_key_decrypts(self, settings):
        old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
        settings.RICLOUD_ENCRYPTION_KEYS = [old]
        token = seal("s")
        settings.RICLOUD_ENCRYPTION_KEYS = [new, old]
        assert unseal(token) == "s"
        fresh = seal("t")
        settings.RICLOUD_ENCRYPTION_KEYS = [new]
        assert unseal(fresh) == "t"
        with pytest.raises(UnreadableSecret):
            unseal(token)

    @pytest.mark.django_db
    def test_reencrypt_moves_every_credential_to_the_first_key(self, settings, key, user):
        old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
        settings.RICLOUD_ENCRYPTION_KEYS = [old]
        session = create_session(key=key, user=user, source_type="mocks.mock", identifier="a@example.com",
                                 payload={"password": "pw"})
        config = StorageConfig.objects.create(organisation=key.organisation, url="s3://b", credentials=seal({"k": "v"}))
        settings.RICLOUD_ENCRYPTION_KEYS = [new, old]
        out = _call("reencrypt")
        assert "Session.credentials: 1 re-encrypted" in out and "StorageConfig.credentials: 1 re-encrypted" in out
        settings.RICLOUD_ENCRYPTION_KEYS = [new]  # the old key removed: everything still opens
        assert unseal(stored(Session, "credentials", session.id)) == {"password": "pw"}
        assert unseal(stored(StorageConfig, "credentials", config.id)) == {"k": "v"}

    @pytest.mark.django_db
    def test_reencrypt_fails_naming_what_no_key_opens(self, settings, key):
        settings.RICLOUD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
        config = WebhookConfig.objects.create(organisation=key.organisation, url="https://x.example", secret=seal("s"))
        settings.RICLOUD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
        with pytest.raises(CommandError, match="could not be decrypted"):
            _call("reencrypt")
        assert stored(WebhookConfig, "secret", config.id) is not None  # left as it was

    def test_the_embedded_default_generates_a_key_file_once(self, settings, tmp_path):
        settings.RICLOUD_ENCRYPTION_KEYS = []
        settings.RICLOUD_ENCRYPTION_KEY_FILE = tmp_path / "var" / "encryption.key"
        token = seal("kept")
        path = tmp_path / "var" / "encryption.key"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        key = path.read_text().strip()
        Fernet(key)  # a valid key
        # Another process (or a restart) reads the same file.
        program = ("from cryptography.fernet import Fernet, MultiFernet; import sys; "
                   f"print(Fernet(open({str(path)!r}).read().strip()).decrypt(sys.argv[1].encode()).decode())")
        opened = subprocess.run([sys.executable, "-c", program, token], capture_output=True, text=True, check=True)
        assert opened.stdout.strip() == '"kept"'
        assert seal("again") and path.read_text().strip() == key

    def test_outside_the_embedded_default_a_missing_key_is_a_clear_error(self, settings):
        settings.RICLOUD_ENCRYPTION_KEYS = []
        settings.RICLOUD_ENCRYPTION_KEY_FILE = None
        with pytest.raises(ImproperlyConfigured, match="RICLOUD_ENCRYPTION_KEYS is not set"):
            require_keys()
        with pytest.raises(ImproperlyConfigured):
            seal("x")
        (error,) = check_encryption_keys()
        assert error.id == "ricloud.E001"

    def test_a_malformed_key_is_a_clear_error(self, settings):
        settings.RICLOUD_ENCRYPTION_KEYS = ["not-a-key"]
        with pytest.raises(ImproperlyConfigured, match="Fernet keys"):
            require_keys()


def _call(*args) -> str:
    from io import StringIO

    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def _production_env(**extra) -> dict:
    env = {name: value for name, value in os.environ.items() if name not in ("RICLOUD_ENCRYPTION_KEYS", "DJANGO_DEBUG")}
    env.setdefault("DATABASE_URL", "postgres://root@127.0.0.1:5432/ricloud_unused")
    return {**env, **extra}


class TestStartWithoutKey:
    """Production (DATABASE_URL set, no DEBUG) without RICLOUD_ENCRYPTION_KEYS does not start."""

    def test_the_web_application_refuses_to_load(self):
        done = subprocess.run([sys.executable, "-c", "import ricloud_server.wsgi"], cwd=ROOT, env=_production_env(),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode != 0 and "RICLOUD_ENCRYPTION_KEYS is not set" in done.stderr

    def test_the_celery_worker_stops_with_the_reason(self):
        done = subprocess.run(
            [sys.executable, "-m", "celery", "-A", "ricloud_server", "worker", "--pool", "solo", "--without-gossip",
             "--without-mingle", "--loglevel", "INFO"],
            cwd=ROOT, env=_production_env(CELERY_BROKER_URL="redis://127.0.0.1:6379/13"), capture_output=True,
            text=True, timeout=60,
        )
        assert done.returncode != 0 and "RICLOUD_ENCRYPTION_KEYS is not set" in done.stdout + done.stderr

    def test_manage_py_commands_stop_at_the_system_check(self):
        done = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=_production_env(),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode != 0 and "ricloud.E001" in done.stderr

    def test_debug_mode_uses_the_key_file(self, tmp_path):
        done = subprocess.run([sys.executable, "-c", "import ricloud_server.wsgi"], cwd=ROOT,
                              env=_production_env(DJANGO_DEBUG="1", RICLOUD_VAR_DIR=str(tmp_path)),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "encryption.key").exists()


@pytest.mark.django_db
class TestSessionCredentials:
    def test_sealed_for_the_init_then_dropped_once_it_ran(self, key, user):
        session = create_session(key=key, user=user, source_type="mocks.mock", identifier="a@example.com",
                                 payload={"password": "pw-1"})
        sealed = stored(Session, "credentials", session.id)
        assert is_token(sealed) and "pw-1" not in sealed
        assert run(Task.objects.get(session=session).id, max_attempts=5) == "succeeded"
        assert Session.objects.get(id=session.id).state == "active"
        assert stored(Session, "credentials", session.id) is None

    def test_dropped_when_the_init_fails(self, key, user):
        session = create_session(key=key, user=user, source_type="mocks.mock", identifier="a@example.com",
                                 payload={"password": "wrong-password"})
        assert run(Task.objects.get(session=session).id, max_attempts=5) == "failed"
        assert Session.objects.get(id=session.id).error == "invalid-credentials"
        assert stored(Session, "credentials", session.id) is None

    def test_dropped_when_the_session_is_deleted_first(self, key, user):
        session = create_session(key=key, user=user, source_type="mocks.mock", identifier="a@example.com",
                                 payload={"password": "pw"})
        expire_session(session=session)
        assert stored(Session, "credentials", session.id) is None

    def test_a_rerun_after_a_crash_still_has_them(self, key, user):
        session = create_session(key=key, user=user, source_type="mocks.mock", identifier="2fa@example.com",
                                 payload={"password": "pw", "code": "123456"})
        task = Task.objects.get(session=session)
        assert claim_task(task.id) is not None  # a worker claimed it, then died
        Task.objects.filter(id=task.id).update(lease_expires=timezone.now() - timedelta(seconds=1))
        assert run(task.id, max_attempts=5) == "succeeded"  # taken over: the 2FA code was still there
        assert Session.objects.get(id=session.id).state == "active"

    def test_an_init_whose_credentials_are_gone_fails_saying_so(self, key, user):
        session = create_session(key=key, user=user, source_type="mocks.mock", identifier="a@example.com",
                                 payload={"password": "pw"})
        Session.objects.filter(id=session.id).update(credentials=None)
        task = Task.objects.get(session=session)
        assert run(task.id, max_attempts=5) == "failed"
        assert Task.objects.get(id=task.id).error == "credentials-unavailable"

    def test_an_init_whose_credentials_no_key_opens_fails_saying_so(self, settings, key, user):
        session = create_session(key=key, user=user, source_type="mocks.mock", identifier="a@example.com",
                                 payload={"password": "pw"})
        settings.RICLOUD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
        task = Task.objects.get(session=session)
        assert run(task.id, max_attempts=5) == "failed"
        assert Task.objects.get(id=task.id).error == "credentials-unreadable"


@pytest.mark.django_db
class TestV2Secrets:
    @pytest.fixture
    def v2(self, key, settings, tmp_path):
        from django.test import Client

        settings.RICLOUD_STORAGE_URL = f"local://{tmp_path}"
        client = Client(HTTP_AUTHORIZATION=f"Token {key.plaintext_token}")
        assert client.post("/register-account/", {"service": "icloud", "username": ACCOUNT}).json()["success"]
        return client

    def submit(self, v2, action, **params):
        response = v2.post("/submit-task/", {"service": "icloud", "action": action, "account": ACCOUNT, **params})
        assert response.status_code == 200, response.content
        return Task.objects.get(id=response.json()["task_id"])

    def test_the_log_in_password_is_sealed_apart_and_dropped_when_the_task_ends(self, v2):
        task = self.submit(v2, "log-in", password="pw-secret-1")
        assert "password" not in task.payload
        assert "pw-secret-1" not in json.dumps(task.payload) and is_token(stored(Task, "secrets", task.id))
        assert unseal(task.secrets) == {"password": "pw-secret-1"}
        assert run(task.id, max_attempts=5) == "succeeded"
        assert run(task.id, max_attempts=5) == "lost"  # idempotent
        assert stored(Task, "secrets", task.id) is None

    def test_a_failed_log_in_drops_it_too(self, v2):
        task = self.submit(v2, "log-in", password="wrong-password")
        assert run(task.id, max_attempts=5) == "failed"
        assert Task.objects.get(id=task.id).error == "invalid-credentials"
        assert stored(Task, "secrets", task.id) is None

    def test_the_2fa_code_is_sealed_and_a_rerun_after_a_crash_still_has_it(self, v2):
        two_factor = "2fa.john@example.com"
        v2.post("/register-account/", {"service": "icloud", "username": two_factor})
        response = v2.post("/submit-task/", {"service": "icloud", "action": "submit-2fa-challenge",
                                             "account": two_factor, "code": "123456"})
        task = Task.objects.get(id=response.json()["task_id"])
        assert task.payload == {} and unseal(task.secrets) == {"code": "123456"}
        assert claim_task(task.id) is not None
        Task.objects.filter(id=task.id).update(lease_expires=timezone.now() - timedelta(seconds=1))
        assert run(task.id, max_attempts=5) == "succeeded"
        assert stored(Task, "secrets", task.id) is None

    def test_a_log_in_whose_password_is_gone_fails_saying_so(self, v2):
        task = self.submit(v2, "log-in", password="pw")
        Task.objects.filter(id=task.id).update(secrets=None)
        assert run(task.id, max_attempts=5) == "failed"
        assert Task.objects.get(id=task.id).error == "credentials-unavailable"


@pytest.mark.django_db
class TestWebhookSecret:
    def test_only_the_create_response_shows_it(self, api, settings):
        settings.RICLOUD_WEBHOOK_ALLOW_PRIVATE = True
        created = api.post_json("/configs/webhook", {"url": "http://127.0.0.1:9/in"}).json()
        secret = created["secret"]
        assert secret.startswith("whsec_")
        config = WebhookConfig.objects.get(id=created["id"])
        assert secret not in stored(WebhookConfig, "secret", config.id) and unseal(config.secret) == secret
        assert api.get(f"/configs/webhook/{config.id}").json()["secret"] is None
        assert secret not in api.get("/configs/webhook").content.decode()
        assert secret not in api.get("/organisation").content.decode()
        assert secret not in api.post_json(f"/configs/webhook/{config.id}", {"url": "http://127.0.0.1:9/x"}
                                           ).content.decode()

    def test_the_test_event_and_its_delivery_carry_no_secret(self, api, settings):
        from tests.receiver import Receiver

        settings.RICLOUD_WEBHOOK_ALLOW_PRIVATE = True
        receiver = Receiver()
        try:
            created = api.post_json("/configs/webhook", {"url": receiver.url}).json()
            run(Task.objects.get(type="webhook_config.test").id, max_attempts=5)
            (request,) = receiver.requests
        finally:
            receiver.close()
        assert created["secret"] not in request["body"].decode() and created["secret"] not in str(request["headers"])
        delivered = json.loads(request["body"])
        assert (delivered["type"], delivered["action"], delivered["data"]["secret"]) == ("webhook_config", "test", None)
        from ricloud.signing import Signature

        Signature.from_header(request["headers"]["Ricloud-Signature"]).verify(
            request["body"].decode(), created["secret"], delta=600)  # still signed with it
        events = api.get("/events").content.decode()
        assert "webhook_config" in events and created["secret"] not in events


@pytest.mark.django_db
def test_storage_credentials_are_sealed_and_masked(api):
    body = api.post_json("/configs/storage", {"url": "s3://bucket/prefix",
                                              "credentials": {"access_key_id": "AKIA1", "secret_access_key": "sk-1"}})
    config = StorageConfig.objects.get(id=body.json()["id"])
    assert "sk-1" not in stored(StorageConfig, "credentials", config.id)
    assert unseal(config.credentials) == {"access_key_id": "AKIA1", "secret_access_key": "sk-1"}
    assert api.get(f"/configs/storage/{config.id}").json()["credentials"] == {
        "access_key_id": "********", "secret_access_key": "********"}
    api.post_json(f"/configs/storage/{config.id}", {"credentials": {"secret_access_key": "sk-2"}})
    assert unseal(StorageConfig.objects.get(id=config.id).credentials) == {"secret_access_key": "sk-2"}


@pytest.mark.django_db(transaction=True)
def test_the_migration_seals_existing_plaintext_and_drops_what_is_no_longer_needed(key, user):
    """0008 on a database of 0007: pending sessions and unfinished v2 tasks keep their credentials,
    sealed; the others lose them; webhook secrets and storage credentials are sealed; the secret
    leaves the webhook_config.test events that carried it."""
    executor = MigrationExecutor(connection)
    executor.migrate([("tasks_app", "0007_webhook_schedule")])
    try:
        with connection.cursor() as cursor:
            source_id = _insert_source(cursor, key, user)
            sessions = {state: _insert_session(cursor, key, user, source_id, state) for state in ("pending", "active")}
            tasks = {state: _insert_v2_task(cursor, key, user, source_id, state) for state in ("pending", "succeeded")}
            cursor.execute("INSERT INTO tasks_app_webhookconfig (organisation_id, url, secret, state, date_created)"
                           " VALUES (%s, 'https://h.example.com', 'whsec_old', 'valid', %s) RETURNING id",
                           [key.organisation_id, timezone.now()])
            webhook_id = cursor.fetchone()[0]
            cursor.execute("INSERT INTO tasks_app_storageconfig (organisation_id, url, credentials, signed_urls_enabled,"
                           " state, date_created) VALUES (%s, 's3://b', %s, false, 'valid', %s) RETURNING id",
                           [key.organisation_id, json.dumps({"secret_access_key": "sk-old"}), timezone.now()])
            storage_id = cursor.fetchone()[0]
            event_id = uuid7()
            cursor.execute("INSERT INTO tasks_app_event (id, organisation_id, key_id, type, action, object_id, data,"
                           " state, retries, date_created) VALUES (%s, %s, %s, 'webhook_config', 'test', %s, %s,"
                           " 'delivered', 0, %s)",
                           [event_id.hex, key.organisation_id, key.id, str(webhook_id),
                            json.dumps({"id": webhook_id, "resource": "webhook_config", "secret": "whsec_old"}),
                            timezone.now()])
    finally:
        MigrationExecutor(connection).migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
    assert unseal(stored(Session, "credentials", sessions["pending"])) == {"password": "pw-old"}
    assert stored(Session, "credentials", sessions["active"]) is None
    pending, ended = Task.objects.get(id=tasks["pending"]), Task.objects.get(id=tasks["succeeded"])
    assert pending.payload == {"keep": 1} and unseal(pending.secrets) == {"password": "pw-old"}
    assert ended.payload == {"keep": 1} and ended.secrets is None
    assert unseal(stored(WebhookConfig, "secret", webhook_id)) == "whsec_old"
    assert unseal(stored(StorageConfig, "credentials", storage_id)) == {"secret_access_key": "sk-old"}
    assert Event.objects.get(id=event_id).data == {"id": webhook_id, "resource": "webhook_config", "secret": None}


def _insert_source(cursor, key, user):
    cursor.execute("INSERT INTO tasks_app_source (organisation_id, user_id, type, identifier, state, date_created)"
                   " VALUES (%s, %s, 'icloud.account', 'm@example.com', 'active', %s) RETURNING id",
                   [key.organisation_id, user.id, timezone.now()])
    return cursor.fetchone()[0]


def _insert_session(cursor, key, user, source_id, state):
    session_id = uuid7()
    cursor.execute("INSERT INTO tasks_app_session (id, organisation_id, key_id, user_id, source_id, payload, state,"
                   " date_created) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                   [session_id.hex, key.organisation_id, key.id, user.id, source_id, json.dumps({"password": "pw-old"}),
                    state, timezone.now()])
    return session_id


def _insert_v2_task(cursor, key, user, source_id, state):
    task_id = uuid7()
    cursor.execute(
        "INSERT INTO tasks_app_task (id, organisation_id, key_id, user_id, source_id, source_type, type, api_version,"
        " has_results, results_consumed, payload, state, attempts, date_created)"
        " VALUES (%s, %s, %s, %s, %s, 'icloud.account', 'log-in', 2, false, false, %s, %s, 0, %s)",
        [task_id.hex, key.organisation_id, key.id, user.id, source_id, json.dumps({"password": "pw-old", "keep": 1}),
         state, timezone.now()])
    return task_id
