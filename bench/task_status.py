#!/usr/bin/env python
"""Benchmark POST /task-status/ with 10,000 ids over 1,000,000 seeded tasks.

    DATABASE_URL=postgres://root@127.0.0.1:5432/ricloud_bench python bench/task_status.py [--requests 60]

Seeds (or reuses) the database of bench/tasks_list.py, then asks the production web server
(the Procfile's gunicorn line) for the status of 10,000 task ids at a time: 80 % tasks of the
calling organisation, 10 % unknown ids and 10 % tasks of another organisation, comma-joined in a
form body exactly as curl sends them. Prints p50/p95/p99 against the targets (p50 <= 150 ms,
p99 <= 300 ms), the time of the SQL lookup alone, and its plan.
"""
import argparse
import os
import random
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tasks_list as base  # noqa: E402  (the shared seeding and server helpers)

TARGET_P50_MS, TARGET_P99_MS = 150.0, 300.0
IDS = 10_000


def pick_ids(org_id, other_org_id, rng) -> list[str]:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT id FROM tasks_app_task WHERE organisation_id = %s ORDER BY random() LIMIT %s",
                    [org_id, IDS * 8 // 10])
        own = [str(row[0]) for row in cur.fetchall()]
        cur.execute("SELECT id FROM tasks_app_task WHERE organisation_id = %s ORDER BY random() LIMIT %s",
                    [other_org_id, IDS // 10])
        foreign = [str(row[0]) for row in cur.fetchall()]
    unknown = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(IDS - len(own) - len(foreign))]
    ids = own + foreign + unknown
    rng.shuffle(ids)
    return ids


def sql_only(org_id, ids, repeats=20):
    """The one lookup the endpoint issues, timed and explained in-process."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from tasks_app.models import Key

    key = Key.objects.filter(organisation_id=org_id).first()
    client = Client(HTTP_AUTHORIZATION="Token " + base.ensure_bench_key(org_id))
    with CaptureQueriesContext(connection) as queries:
        response = client.post("/task-status/", {"task_ids": ",".join(ids)})
    assert response.status_code == 200, response.content[:300]
    lookups = [q["sql"] for q in queries.captured_queries if "tasks_app_task" in q["sql"]]
    assert len(lookups) == 1, f"expected one task query, saw {len(lookups)}"
    timings = []
    with connection.cursor() as cur:
        for _ in range(repeats):
            t0 = time.perf_counter()
            cur.execute(lookups[0])
            cur.fetchall()
            timings.append((time.perf_counter() - t0) * 1000)
        cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + lookups[0])
        plan = "\n".join(row[0] for row in cur.fetchall())
    assert key is not None
    return sorted(timings), plan, len(queries.captured_queries)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--sessions", type=int, default=2_000)
    parser.add_argument("--reseed", action="store_true")
    parser.add_argument("--allow-any-db", action="store_true")
    parser.add_argument("--requests", type=int, default=60, help="timed requests (default 60)")
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()

    import dj_database_url

    database_url = os.environ.get("DATABASE_URL") or base.DEFAULT_DATABASE_URL
    db = dj_database_url.parse(database_url)
    env = {**os.environ, "DATABASE_URL": database_url, "DJANGO_SETTINGS_MODULE": "ricloud_server.settings",
           "DJANGO_DEBUG": "0", "ALLOWED_HOSTS": "*", "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING")}
    env.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
    env.setdefault("RICLOUD_RATE_LIMIT_ORGANISATION", "1000000/hour")
    os.environ.update(env)
    import django

    django.setup()
    meta = base.prepare_database(db, env, args)
    assert meta is not None

    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT organisation_id, count(*) FROM tasks_app_task GROUP BY 1 ORDER BY 2 DESC")
        orgs = cur.fetchall()
    (org_id, org_tasks), (other_id, _) = orgs[0], orgs[1]
    print(f"tasks: {sum(n for _, n in orgs):,}; calling organisation {org_id} ({org_tasks:,} tasks)")
    ids = pick_ids(org_id, other_id, random.Random(7))
    timings, plan, query_count = sql_only(org_id, ids)
    print(f"\n=== the SQL lookup alone ({query_count} queries per request in all; 1 for the tasks) ===")
    print(f"p50 {base.percentile(timings, 50):.1f} ms, p99 {base.percentile(timings, 99):.1f} ms")
    print("\n".join(line[:160] for line in plan.splitlines()))

    import requests

    token = base.ensure_bench_key(org_id)
    port = base.free_port()
    proc, log = base.start_server(env, port)
    url = f"http://127.0.0.1:{port}/task-status/"
    http = requests.Session()
    http.headers["Authorization"] = f"Token {token}"
    body = {"task_ids": ",".join(ids)}
    samples = []
    try:
        base.wait_ready(http, f"http://127.0.0.1:{port}", proc, log)
        for i in range(args.warmup + args.requests):
            t0 = time.perf_counter()
            response = http.post(url, data=body)
            elapsed = (time.perf_counter() - t0) * 1000
            if response.status_code != 200:
                sys.exit(f"HTTP {response.status_code}: {response.content[:300]!r}")
            if i >= args.warmup:
                samples.append(elapsed)
        answer = response.json()
    finally:
        http.close()
        base.stop_server(proc)
    found = sum(1 for k, v in answer.items() if k != "success" and "status" in v)
    missing = sum(1 for k, v in answer.items() if k != "success" and "status" not in v)
    samples.sort()
    print(f"cpu calibration loop: {base.cpu_calibration():.2f} s (quiet machine: ~0.7 s)")
    p50, p95, p99 = (base.percentile(samples, q) for q in (50, 95, 99))
    ok = p50 <= TARGET_P50_MS and p99 <= TARGET_P99_MS
    print(f"\n=== POST /task-status/ with {IDS:,} ids over HTTP (gunicorn; {args.requests} timed requests) ===")
    print(f"answered: {found:,} statuses, {missing:,} not-found entries; {len(response.content):,} bytes")
    print(f"p50 {p50:.1f} ms  p95 {p95:.1f} ms  p99 {p99:.1f} ms  max {samples[-1]:.1f} ms")
    print(f"targets: p50 <= {TARGET_P50_MS:.0f} ms, p99 <= {TARGET_P99_MS:.0f} ms: {'PASS' if ok else 'FAIL'}")


if __name__ == "__main__":
    main()
