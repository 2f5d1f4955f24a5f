#!/usr/bin/env python
"""CPU per request and per task of the hot paths, in one process, without HTTP (run on demand).

    DATABASE_URL=postgres://root@127.0.0.1:5432/ricloud_bench_hot .venv/bin/python bench/hotpath.py [-n 500]

Creates (or reuses) the database, then times with `time.process_time()` (this process's CPU
only, not Postgres's or Redis's): v2 `POST /submit-task/` and v3 `POST /polls` (one info task)
through Django's test client (the whole middleware and view stack, no socket), and
`workers.runner.run` of the tasks they created (the worker's work without Celery's). A
diagnostic for where the CPU goes (`--profile` prints the top functions); the side-by-side
figures against the peers come from bench/load.py.
"""
import argparse
import base64
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DATABASE_URL", "postgres://root@127.0.0.1:5432/ricloud_bench_hot")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/12")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ricloud_server.settings")
os.environ["RICLOUD_RATE_LIMIT_ORGANISATION"] = ""
# Production mode (DATABASE_URL set) needs an encryption key for credentials: one per run.
os.environ.setdefault("RICLOUD_ENCRYPTION_KEYS", base64.urlsafe_b64encode(os.urandom(32)).decode())


def ensure_database(url: str) -> None:
    from urllib.parse import urlsplit

    import psycopg2

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if "bench" not in name:
        sys.exit("the database name must contain 'bench'")
    conn = psycopg2.connect(host=parts.hostname, port=parts.port or 5432, user=parts.username or "root", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if not cursor.fetchone():
            cursor.execute(f'CREATE DATABASE "{name}"')
    conn.close()


def timed(label, fn, n, profile):
    profiler = cProfile.Profile() if profile else None
    start = time.process_time()
    wall = time.perf_counter()
    if profiler:
        profiler.enable()
    for _ in range(n):
        fn()
    if profiler:
        profiler.disable()
    cpu = (time.process_time() - start) / n * 1000
    print(f"{label:<34} {cpu:6.2f} ms CPU  {(time.perf_counter() - wall) / n * 1000:6.2f} ms wall  (n={n})")
    if profiler:
        pstats.Stats(profiler).sort_stats(os.environ.get("SORT", "tottime")).print_stats(os.environ.get("FILTER", ""), 25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=500)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    ensure_database(os.environ["DATABASE_URL"])
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.test import Client

    call_command("migrate", verbosity=0)
    settings.RICLOUD_STORAGE_URL = f"local://{ROOT / 'var' / 'bench-hot-results'}"
    from tasks_app.models import Task, User
    from tasks_app.services import accounts
    from tasks_app.services.organisations import create_organisation
    from tasks_app.services.sessions import create_session
    from workers.runner import run

    _, key = create_organisation(name=f"hotpath {time.time()}")
    user = User.objects.create(organisation=key.organisation, key=key, identifier="hot@example.com")
    session = create_session(key=key, user=user, source_type="mocks.mock", identifier="hot@example.com", payload={})
    run(Task.objects.get(session=session).id, max_attempts=5)
    accounts.register_account(key=key, source_type="icloud.account", username="hot@example.com")
    client = Client()
    auth = {"HTTP_AUTHORIZATION": f"Token {key.plaintext_token}"}
    poll_body = '{"session": "%s", "payload": {"info_types": ["account.info"]}}' % session.id
    v2_form = {"service": "icloud", "action": "perform-2fa-challenge", "account": "hot@example.com", "device": "0"}

    def v3():
        assert client.post("/polls", poll_body, content_type="application/json", **auth).status_code == 201

    def v2():
        response = client.post("/submit-task/", v2_form, **auth)
        assert response.status_code == 200, response.content

    for fn in (v3, v2):
        for _ in range(20):
            fn()
    timed("v3 POST /polls (web)", v3, args.n, args.profile)
    timed("v2 POST /submit-task/ (web)", v2, args.n, args.profile)
    for label, api in (("v3 info task (worker runner)", 3), ("v2 task (worker runner)", 2)):
        ids = iter(list(Task.objects.filter(organisation_id=key.organisation_id, state="pending", api_version=api)
                        .order_by("id").values_list("id", flat=True)))
        count = min(args.n, Task.objects.filter(organisation_id=key.organisation_id, state="pending",
                                                api_version=api).count())
        timed(label, lambda ids=ids: run(next(ids), max_attempts=5), count, args.profile)


if __name__ == "__main__":
    main()
