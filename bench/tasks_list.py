#!/usr/bin/env python
"""Benchmark filtered `GET /tasks` pages on a large tasks table (run on demand, never in the suite).

    DATABASE_URL=postgres://root@127.0.0.1:5432/ricloud_bench .venv/bin/python bench/tasks_list.py \
        [--tasks 1000000] [--reseed] [--requests 200]

1. Creates the database if missing, runs `manage.py migrate`, and seeds it in SQL (INSERT ... SELECT
   from generate_series; task ids are UUIDv7 built from `date_created`), unless a previous run
   already seeded the same number of tasks. Runs VACUUM ANALYZE afterwards.
2. Prints the EXPLAIN ANALYZE plan of every query the list view issues per scenario (captured
   in-process through django.test.Client) and whether an index serves it.
3. Starts the Procfile's `web` line (gunicorn) on a free port and times each scenario over HTTP
   with a keep-alive `requests.Session`: p50/p95/p99/max in ms, against p50 <= 20 ms, p99 <= 100 ms.

The database must have "bench" in its name (it is wiped on reseed) unless --allow-any-db is given.
"""
import argparse
import base64
import math
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Production mode (DATABASE_URL set) needs an encryption key for credentials: one per run.
os.environ.setdefault("RICLOUD_ENCRYPTION_KEYS", base64.urlsafe_b64encode(os.urandom(32)).decode())

DEFAULT_DATABASE_URL = "postgres://root@127.0.0.1:5432/ricloud_bench"
ORG_WEIGHTS = (0.40, 0.25, 0.15, 0.12, 0.08)  # share of users (and so of tasks) per organisation
KEYS_PER_ORG = 2
POLLS_PER_SESSION = 20
SPAN_DAYS = 90
TARGET_P50_MS = 20.0
TARGET_P99_MS = 100.0
INFO_TYPES = ("account.info", "account.devices")
DATA_TYPES = (
    "ios_messages.messages", "messages.sms", "whatsapp.messages", "photos",
    "call_history.calls", "contacts.contacts", "notes.notes", "safari.history",
)


def sql_array(values) -> str:
    return "ARRAY[" + ",".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


def uuid7_sql(ts: str) -> str:
    """A version-7 UUID for timestamp expression `ts`: 48-bit ms prefix, version 7, random rest.

    gen_random_uuid() (v4) supplies the random bits; its hex digit 17 already carries the RFC 9562
    variant (8-b), so only the first 13 hex digits are replaced.
    """
    return (
        f"(lpad(to_hex(floor(extract(epoch FROM {ts}) * 1000)::bigint), 12, '0') || '7'"
        f" || substr(replace(gen_random_uuid()::text, '-', ''), 14))::uuid"
    )


# --- database ------------------------------------------------------------------------------------


def connect(db, dbname=None):
    import psycopg2

    return psycopg2.connect(
        dbname=dbname or db["NAME"],
        user=db.get("USER") or None,
        password=db.get("PASSWORD") or None,
        host=db.get("HOST") or None,
        port=db.get("PORT") or None,
    )


def admin_execute(db, sql, params=()):
    conn = connect(db, "postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params or None)
            return cur.fetchall() if cur.description else None
    finally:
        conn.close()


def database_exists(db) -> bool:
    return bool(admin_execute(db, "SELECT 1 FROM pg_database WHERE datname = %s", (db["NAME"],)))


def seeded_meta(db):
    """The marker row a completed seed leaves behind, or None."""
    conn = connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('bench_meta') IS NOT NULL")
            if not cur.fetchone()[0]:
                return None
            cur.execute("SELECT tasks, sessions, t_end, seconds FROM bench_meta ORDER BY seeded_at DESC LIMIT 1")
            row = cur.fetchone()
            return None if row is None else dict(zip(("tasks", "sessions", "t_end", "seconds"), row, strict=True))
    finally:
        conn.close()


def migrate(env):
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    print(f"migrate: {time.perf_counter() - t0:.1f} s")


class Seeder:
    """Generates organisations, keys, users, sources, sessions, polls, tasks and results in SQL."""

    def __init__(self, db, tasks: int, sessions: int):
        self.db = db
        self.n_tasks = tasks
        self.n_sessions = max(1, min(sessions, tasks // 10 or 1))
        self.per_session = math.ceil(tasks / self.n_sessions)
        self.polls = max(1, min(POLLS_PER_SESSION, self.per_session - 1))
        self.n_users = max(len(ORG_WEIGHTS), self.n_sessions // 2)
        self.timings = []

    def step(self, cur, label, sql, params=()):
        t0 = time.perf_counter()
        cur.execute(sql, params or None)
        elapsed = time.perf_counter() - t0
        rows = f" ({cur.rowcount:,} rows)" if cur.rowcount and cur.rowcount > 0 else ""
        print(f"  {label:<36} {elapsed:7.1f} s{rows}", flush=True)
        self.timings.append((label, elapsed))

    def run(self):
        t_start = time.perf_counter()
        print(
            f"seeding {self.n_tasks:,} tasks: {len(ORG_WEIGHTS)} organisations, {self.n_users:,} users/sources, "
            f"{self.n_sessions:,} sessions, {self.n_sessions * self.polls:,} polls, ~{self.per_session} tasks/session"
        )
        conn = connect(self.db)
        try:
            with conn.cursor() as cur:
                cur.execute("SET synchronous_commit = off")
                cur.execute("SET maintenance_work_mem = '512MB'")
                cur.execute("SET work_mem = '256MB'")
                try:
                    # Skip FK triggers while loading (superuser only); the generator keeps them true.
                    cur.execute("SAVEPOINT replica")
                    cur.execute("SET session_replication_role = replica")
                except Exception:
                    cur.execute("ROLLBACK TO SAVEPOINT replica")
                cur.execute("SELECT setseed(0.42)")
                defaults = self.set_column_defaults(cur)
                self.seed_parents(cur)
                dropped = self.drop_indexes(cur, ("tasks_app_task", "tasks_app_result"))
                self.seed_tasks(cur)
                self.seed_results(cur)
                for name, definition in dropped:
                    self.step(cur, f"CREATE INDEX {name}", definition)
                # Triggers were off for the load (replica role): recompute the task counters once.
                from tasks_app.services.counts import REBUILD_SQL

                self.step(cur, "rebuild task counters", REBUILD_SQL)
                for table, column in defaults:
                    cur.execute(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" DROP DEFAULT')
                cur.execute(
                    "CREATE TABLE IF NOT EXISTS bench_meta (tasks bigint, sessions int, t_end timestamptz,"
                    " seconds float8, seeded_at timestamptz DEFAULT now())"
                )
                cur.execute(
                    "INSERT INTO bench_meta (tasks, sessions, t_end, seconds) SELECT %s, %s, t_end, %s FROM b_const",
                    (self.n_tasks, self.n_sessions, time.perf_counter() - t_start),
                )
            conn.commit()
        finally:
            conn.close()
        load = time.perf_counter() - t_start
        conn = connect(self.db)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                self.step(cur, "VACUUM ANALYZE", "VACUUM ANALYZE")
        finally:
            conn.close()
        total = time.perf_counter() - t_start
        print(f"seeding: {total:.1f} s in all ({load:.1f} s load + indexes, {total - load:.1f} s VACUUM ANALYZE)")
        return total

    def set_column_defaults(self, cur):
        """Give NOT NULL columns without a database default the model field's default, for the load.

        The INSERTs below name the columns they know; a field added to a model later (with a Python
        default) then still gets a value. The defaults are dropped again before commit.
        """
        from django.apps import apps
        from django.db import connection

        changed = []
        for model in apps.get_app_config("tasks_app").get_models():
            table = model._meta.db_table
            cur.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_name = %s AND is_nullable = 'NO' AND column_default IS NULL",
                (table,),
            )
            bare = {row[0] for row in cur.fetchall()}
            for field in model._meta.concrete_fields:
                if field.column in bare and field.has_default() and not field.primary_key:
                    value = field.get_db_prep_save(field.get_default(), connection)
                    literal = cur.mogrify("%s", (value,)).decode()
                    cur.execute(f'ALTER TABLE "{table}" ALTER COLUMN "{field.column}" SET DEFAULT {literal}')
                    changed.append((table, field.column))
        return changed

    def drop_indexes(self, cur, tables):
        """Drop secondary indexes (not those behind constraints) to rebuild them once after loading."""
        cur.execute(
            """
            SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
            FROM pg_index i
            WHERE i.indrelid = ANY(%s::regclass[])
              AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
            ORDER BY 1
            """,
            (list(tables),),
        )
        dropped = cur.fetchall()
        for name, _ in dropped:
            cur.execute(f'DROP INDEX "{name}"')
        return dropped

    def seed_parents(self, cur):
        bounds, lo = [], 0.0
        for weight in ORG_WEIGHTS:
            bounds.append((lo, lo + weight))
            lo += weight
        bounds[-1] = (bounds[-1][0], 1.0 + 1e-9)
        cur.execute(
            f"CREATE TEMP TABLE b_const AS SELECT date_trunc('second', now()) AS t_end,"
            f" date_trunc('second', now()) - interval '{SPAN_DAYS} days' AS t_start"
        )
        cur.execute("CREATE TEMP TABLE b_org (idx int, id bigint, lo float8, hi float8, keys bigint[])")
        for idx, (lo, hi) in enumerate(bounds, start=1):
            cur.execute(
                "INSERT INTO tasks_app_organisation (name, slug, state, date_created)"
                " SELECT %s, %s, 'active', t_start - interval '30 days' FROM b_const RETURNING id",
                (f"Bench Org {idx}", f"bench-org-{idx}"),
            )
            org_id = cur.fetchone()[0]
            keys = []
            for k in range(1, KEYS_PER_ORG + 1):
                cur.execute(
                    "INSERT INTO tasks_app_key (organisation_id, type, token_hash, state, date_created)"
                    " SELECT %s, 'standard', encode(sha256(convert_to(%s, 'UTF8')), 'hex'), 'active',"
                    " t_start - interval '30 days' FROM b_const RETURNING id",
                    (org_id, f"bench-seed-key-{org_id}-{k}"),
                )
                keys.append(cur.fetchone()[0])
            cur.execute("INSERT INTO b_org VALUES (%s, %s, %s, %s, %s)", (idx, org_id, lo, hi, keys))

        users = self.n_users
        self.step(
            cur,
            "users (staging)",
            f"""
            CREATE TEMP TABLE b_user AS
            SELECT u AS idx, o.id AS org_id, o.keys[1 + u % {KEYS_PER_ORG}] AS key_id,
                   CASE WHEN u % 10 < 7 THEN 'icloud.account' ELSE 'mocks.mock' END AS source_type,
                   NULL::bigint AS user_id, NULL::bigint AS source_id
            FROM generate_series(1, {users}) u
            JOIN b_org o ON (u - 1)::float8 / {users} >= o.lo AND (u - 1)::float8 / {users} < o.hi
            """,
        )
        self.step(
            cur,
            "tasks_app_user",
            """
            WITH ins AS (
                INSERT INTO tasks_app_user (identifier, state, date_created, key_id, organisation_id)
                SELECT 'bench-user-' || idx, 'active', c.t_start - interval '7 days', key_id, org_id
                FROM b_user, b_const c ORDER BY idx
                RETURNING id, identifier
            )
            UPDATE b_user SET user_id = ins.id FROM ins WHERE ins.identifier = 'bench-user-' || b_user.idx
            """,
        )
        self.step(
            cur,
            "tasks_app_source",
            """
            WITH ins AS (
                INSERT INTO tasks_app_source (type, identifier, info, state, date_created, organisation_id, user_id)
                SELECT source_type, 'bench-user-' || idx || '@example.com', NULL, 'active',
                       c.t_start - interval '7 days', org_id, user_id
                FROM b_user, b_const c ORDER BY idx
                RETURNING id, user_id
            )
            UPDATE b_user SET source_id = ins.id FROM ins WHERE ins.user_id = b_user.user_id
            """,
        )
        # Two sessions per user, created uniformly over the span (but not in its last 2 days).
        self.step(
            cur,
            "sessions (staging)",
            f"""
            CREATE TEMP TABLE b_session AS
            SELECT x.*, {uuid7_sql('x.created')} AS id
            FROM (
                SELECT s AS idx, u.org_id, u.key_id, u.user_id, u.source_id, u.source_type,
                       c.t_start + random() * (c.t_end - c.t_start - interval '2 days') AS created
                FROM generate_series(1, {self.n_sessions}) s
                JOIN b_user u ON u.idx = (s + 1) / 2
                CROSS JOIN b_const c
            ) x
            """,
        )
        cur.execute("CREATE UNIQUE INDEX ON b_session (idx)")
        self.step(
            cur,
            "tasks_app_session",
            """
            INSERT INTO tasks_app_session (id, state, error, date_created, date_expired,
                                           key_id, organisation_id, source_id, user_id)
            SELECT id,
                   CASE WHEN created < c.t_end - interval '45 days' AND idx % 3 = 0 THEN 'expired' ELSE 'active' END,
                   NULL, created,
                   CASE WHEN created < c.t_end - interval '45 days' AND idx % 3 = 0
                        THEN created + interval '30 days' END,
                   key_id, org_id, source_id, user_id
            FROM b_session, b_const c ORDER BY id
            """,
        )
        # A session's polls are spread from its creation to now, in order.
        self.step(
            cur,
            "polls (staging)",
            f"""
            CREATE TEMP TABLE b_poll AS
            SELECT x.*, {uuid7_sql('x.created')} AS id
            FROM (
                SELECT (s.idx - 1) * {self.polls} + k AS idx, s.idx AS session_idx,
                       s.created + ((k - 1 + random()) / {self.polls}) * (c.t_end - s.created) AS created
                FROM b_session s CROSS JOIN generate_series(1, {self.polls}) k CROSS JOIN b_const c
            ) x
            """,
        )
        cur.execute("CREATE UNIQUE INDEX ON b_poll (idx)")
        self.step(
            cur,
            "tasks_app_poll",
            """
            INSERT INTO tasks_app_poll (id, payload, requestor, state, date_created, date_started, date_completed,
                                        key_id, organisation_id, session_id, source_id, user_id)
            SELECT p.id, '{}'::jsonb, 'api',
                   CASE WHEN p.created < c.t_end - interval '1 hour' THEN 'completed' ELSE 'processing' END,
                   p.created, p.created + interval '50 ms',
                   CASE WHEN p.created < c.t_end - interval '1 hour' THEN p.created + interval '3 minutes' END,
                   s.key_id, s.org_id, s.id, s.source_id, s.user_id
            FROM b_poll p JOIN b_session s ON s.idx = p.session_idx CROSS JOIN b_const c
            ORDER BY p.id
            """,
        )

    def seed_tasks(self, cur):
        """Per session: one session.init task, then ~25 info/data/file tasks for each of its polls."""
        per, polls = self.per_session, self.polls
        self.step(
            cur,
            "tasks_app_task",
            f"""
            WITH g AS MATERIALIZED (
                SELECT i, i % {per} AS j, s.org_id, s.key_id, s.user_id, s.source_id, s.source_type,
                       s.id AS session_id, p.id AS poll_id,
                       CASE WHEN i % {per} = 0 THEN s.created
                            ELSE p.created + ((i % {per} - 1) / {polls}) * interval '3 ms' END AS created,
                       random() AS r_type, random() AS r_state, random() AS r_pick, random() AS r_time
                FROM generate_series(0, {self.n_tasks - 1}) i
                JOIN b_session s ON s.idx = i / {per} + 1
                LEFT JOIN b_poll p ON i % {per} > 0 AND p.idx = (s.idx - 1) * {polls} + (i % {per} - 1) % {polls} + 1
            ), t AS MATERIALIZED (
                SELECT g.*,
                       CASE WHEN j = 0 THEN 'session.init' WHEN r_type < 0.10 THEN 'info'
                            WHEN r_type < 0.55 THEN 'data' ELSE 'file' END AS type,
                       CASE WHEN j = 0 THEN (CASE WHEN r_state < 0.97 THEN 'succeeded' ELSE 'failed' END)
                            WHEN r_state < 0.900 THEN 'succeeded' WHEN r_state < 0.960 THEN 'failed'
                            WHEN r_state < 0.980 THEN 'pending' WHEN r_state < 0.992 THEN 'processing'
                            ELSE 'suspended' END AS state
                FROM g
            )
            INSERT INTO tasks_app_task (id, source_type, type, target, payload, state, error, attempts,
                                        date_enqueued, lease_expires, date_created, date_started, date_completed,
                                        key_id, organisation_id, poll_id, session_id, source_id, user_id)
            SELECT {uuid7_sql('t.created')}, source_type, type,
                   CASE type WHEN 'info' THEN ({sql_array(INFO_TYPES)})[1 + floor(r_pick * {len(INFO_TYPES)})::int]
                             WHEN 'data' THEN ({sql_array(DATA_TYPES)})[1 + floor(r_pick * {len(DATA_TYPES)})::int]
                             WHEN 'file' THEN 'photos-' || lpad(to_hex(i), 8, '0') || '-original'
                   END,
                   '{{}}'::jsonb, state,
                   CASE WHEN state = 'failed' THEN (ARRAY['mock-failure', 'not-found', 'upstream-timeout'])
                        [1 + floor(r_pick * 3)::int] END,
                   CASE WHEN state = 'pending' THEN 0 ELSE 1 END,
                   created,
                   CASE WHEN state = 'processing' THEN created + interval '330 seconds' END,
                   created,
                   CASE WHEN state <> 'pending' THEN created + (0.05 + r_time * 2) * interval '1 second' END,
                   CASE WHEN state IN ('succeeded', 'failed')
                        THEN created + (0.3 + r_time * 30) * interval '1 second' END,
                   key_id, org_id, poll_id, session_id, source_id, user_id
            FROM t
            ORDER BY 1
            """,
        )

    def seed_results(self, cur):
        """One result per succeeded info/data/file task; older than a week means consumed."""
        self.step(
            cur,
            "tasks_app_result",
            f"""
            INSERT INTO tasks_app_result (id, identifier, url, type, checksum, size, state, date_created,
                                          date_consumed, date_deleted, organisation_id, poll_id, task_id)
            SELECT {uuid7_sql('t.date_completed')}, t.target,
                   'local:///data/results/' || t.organisation_id || '/' || t.id || '/' || t.target,
                   CASE WHEN t.type = 'file' THEN 'jpg' ELSE 'json' END,
                   md5(t.id::text), 200 + floor(random() * 4000000)::bigint,
                   CASE WHEN t.date_completed < c.t_end - interval '7 days' THEN 'consumed' ELSE 'available' END,
                   t.date_completed,
                   CASE WHEN t.date_completed < c.t_end - interval '7 days' THEN t.date_completed + interval '2 minutes' END,
                   NULL, t.organisation_id, t.poll_id, t.id
            FROM tasks_app_task t CROSS JOIN b_const c
            WHERE t.state = 'succeeded' AND t.type IN ('info', 'data', 'file')
            ORDER BY 1
            """,
        )


def prepare_database(db, env, args):
    if "bench" not in db["NAME"] and not args.allow_any_db:
        sys.exit(
            f"refusing to seed database {db['NAME']!r}: its name has no 'bench' (it is wiped on reseed);"
            " point DATABASE_URL at e.g. .../ricloud_bench or pass --allow-any-db"
        )
    exists = database_exists(db)
    meta = seeded_meta(db) if exists else None
    if exists and (args.reseed or meta is None or meta["tasks"] != args.tasks):
        reason = "--reseed" if args.reseed else ("no completed seed" if meta is None else f"seeded with {meta['tasks']:,} tasks")
        print(f"dropping database {db['NAME']} ({reason})")
        admin_execute(db, f'DROP DATABASE "{db["NAME"]}" WITH (FORCE)')
        exists, meta = False, None
    if not exists:
        admin_execute(db, f'CREATE DATABASE "{db["NAME"]}"')
        print(f"created database {db['NAME']}")
    migrate(env)
    if meta is not None:
        print(f"seed present: {meta['tasks']:,} tasks (seeded in {meta['seconds']:.1f} s); pass --reseed to redo it")
        return meta
    Seeder(db, args.tasks, args.sessions).run()
    return seeded_meta(db)


# --- scenarios ------------------------------------------------------------------------------------


def iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_scenarios(org_id, meta):
    from tasks_app.models import Session, Task

    sessions = Session.objects.filter(organisation_id=org_id).order_by("id")
    session_id = sessions.values_list("id", flat=True)[sessions.count() // 2]
    after_id = Task.objects.filter(organisation_id=org_id).order_by("-pk").values_list("pk", flat=True)[99]
    t_end = meta["t_end"]
    week_lo, week_hi = t_end - timedelta(days=37), t_end - timedelta(days=30)
    return [
        ("no filter", {}),
        ("state=failed", {"state": "failed"}),
        ("type=data", {"type": "data"}),
        ("session=<id>", {"session": str(session_id)}),
        ("date_created 1 week", {"date_created__gte": iso(week_lo), "date_created__lt": iso(week_hi)}),
        ("state=succeeded&type=file", {"state": "succeeded", "type": "file"}),
        ("page 2 (after_id)", {"after_id": str(after_id)}),
    ]


def path_for(params) -> str:
    return "/tasks?" + urlencode({"limit": 100, **params})


def ensure_bench_key(org_id) -> str:
    """A key of the benchmarked organisation with a fixed token (created once)."""
    from tasks_app.models import Key, Organisation, hash_token
    from tasks_app.services.organisations import create_key

    token = f"ricloud-bench-token-org-{org_id}"
    if not Key.objects.filter(token_hash=hash_token(token)).exists():
        create_key(organisation=Organisation.objects.get(id=org_id), token=token)
    return token


INDEX_RE = re.compile(r"(?:Index Scan|Index Only Scan|Bitmap Index Scan)(?: Backward)? (?:using|on) (\S+)")


def query_label(sql: str) -> str:
    table = re.search(r'FROM "(\w+)"', sql)
    table = table.group(1) if table else ""
    if table == "tasks_app_key":
        return "auth (key)"
    if table == "tasks_app_result":
        return "prefetch results"
    if re.match(r"\s*SELECT COUNT\(", sql, re.I):
        return "count (total_count)"
    return "page"


def explain_scenarios(scenarios, token):
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_AUTHORIZATION=f"Token {token}")
    summary = {}
    print("\n=== query plans (EXPLAIN ANALYZE of the SQL the list view issues, captured in-process) ===")
    for name, params in scenarios:
        path = path_for(params)
        client.get(path)  # warm caches and the connection
        with CaptureQueriesContext(connection) as ctx:
            response = client.get(path)
        if response.status_code != 200:
            sys.exit(f"{path}: HTTP {response.status_code}: {response.content[:500]!r}")
        body = response.json()
        print(f"\n--- {name}: GET {path}")
        print(f"    {len(ctx.captured_queries)} queries; total_count={body['total_count']:,}, "
              f"page={len(body['data'])}, has_more={body['has_more']}")
        seq_scans, slow, timings = [], [], []
        for query in ctx.captured_queries:
            sql = query["sql"]
            label = query_label(sql)
            if label == "auth (key)" or not sql.lstrip().upper().startswith("SELECT"):
                continue  # EXPLAIN ANALYZE executes the statement: reads only
            with connection.cursor() as cur:
                cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
                plan = "\n".join(row[0] for row in cur.fetchall())
            indexes = sorted(set(INDEX_RE.findall(plan)))
            # `Seq Scan on tasks_app_task ` (with the space): not the small counter tables.
            seq = [t for t in ("tasks_app_task", "tasks_app_result") if re.search(rf"Seq Scan on {t}\b", plan)]
            seq_scans += [f"{label}: {t}" for t in seq]
            exec_ms = re.search(r"Execution Time: ([\d.]+) ms", plan)
            verdict = ("SEQ SCAN on " + ", ".join(seq)) if seq else ("index: " + ", ".join(indexes) if indexes else "no index")
            discarded = sum(int(n) for n in re.findall(r"Rows Removed by Filter: (\d+)", plan))
            if discarded > 10_000:
                # An index scan that filters its way to the rows is no better than a scan.
                verdict += f" (but discards {discarded:,} rows by filter)"
                slow.append(f"{label} discards {discarded:,} rows")
            timings.append(f"{label} {float(exec_ms.group(1)) if exec_ms else float('nan'):.1f} ms")
            print(f"  [{label}] {float(exec_ms.group(1)) if exec_ms else float('nan'):.2f} ms — {verdict}")
            print("    SQL: " + (sql if len(sql) < 600 else sql[:600] + " ..."))
            print("\n".join("      " + line for line in plan.splitlines()))
        verdict = "indexes only (no Seq Scan)" if not seq_scans else "Seq Scan in " + "; ".join(seq_scans)
        if slow:
            verdict += "; " + "; ".join(slow)
        summary[name] = (verdict, ", ".join(timings))
    print("\nindex usage per scenario (EXPLAIN ANALYZE execution times):")
    for name, (verdict, timings) in summary.items():
        print(f"  {name:<28} {verdict}\n  {'':<28} {timings}")
    return summary


# --- HTTP timing ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def procfile_web_line() -> str:
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith("web:"):
            return line.split(":", 1)[1].strip()
    raise SystemExit("Procfile has no web line")


def start_server(env, port):
    command = procfile_web_line()
    log = tempfile.NamedTemporaryFile(prefix="bench-gunicorn-", suffix=".log", delete=False)
    server_env = {
        **env,
        "PORT": str(port),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    }
    print(f"\nstarting: {command}  (PORT={port}, log {log.name})")
    proc = subprocess.Popen(
        ["sh", "-c", "exec " + command], cwd=ROOT, env=server_env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return proc, log.name


def stop_server(proc):
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, 15)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def wait_ready(session, base, proc, log, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited with {proc.returncode}; see {log}")
        try:
            if session.get(base + "/organisation", timeout=2).status_code == 200:
                return
        except Exception:
            pass
        time.sleep(0.2)
    sys.exit(f"server not ready after {timeout} s; see {log}")


def cpu_calibration() -> float:
    """Seconds for a fixed CPU-bound loop: these shared machines vary, so every run prints it
    (about 0.7 s on a quiet 2-core machine here); compare latencies between runs with it."""
    t0 = time.perf_counter()
    sum(i * i for i in range(10**7))
    return time.perf_counter() - t0


def percentile(sorted_values, q) -> float:
    """Nearest-rank percentile."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def time_scenarios(scenarios, token, env, requests_per, warmup):
    import requests

    port = free_port()
    proc, log = start_server(env, port)
    base = f"http://127.0.0.1:{port}"
    http = requests.Session()
    http.headers["Authorization"] = f"Token {token}"
    results = {}
    try:
        wait_ready(http, base, proc, log)
        for name, params in scenarios:
            url = base + path_for(params)
            for _ in range(warmup):
                http.get(url).raise_for_status()
            samples = []
            size = 0
            for _ in range(requests_per):
                t0 = time.perf_counter()
                response = http.get(url)
                content = response.content
                samples.append((time.perf_counter() - t0) * 1000)
                if response.status_code != 200:
                    sys.exit(f"{url}: HTTP {response.status_code}: {content[:300]!r}")
                size = len(content)
            results[name] = (sorted(samples), size)
    finally:
        http.close()
        stop_server(proc)
    os.unlink(log)  # kept only when the run failed
    return results


def report(results, requests_per, warmup):
    print(f"\n=== GET /tasks over HTTP (gunicorn, keep-alive, sequential; {warmup} warm-up + {requests_per} "
          f"timed requests per scenario, limit=100) ===")
    header = f"{'scenario':<28} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8} {'bytes':>8}  verdict"
    print(header)
    print("-" * len(header))
    everything = []
    failed = []

    def line(name, samples, size):
        p50, p95, p99 = (percentile(samples, q) for q in (50, 95, 99))
        ok = p50 <= TARGET_P50_MS and p99 <= TARGET_P99_MS
        size_text = f"{size:>8,}" if size is not None else f"{'':>8}"
        verdict = "PASS" if ok else "FAIL (" + ", ".join(
            x for x, bad in (("p50", p50 > TARGET_P50_MS), ("p99", p99 > TARGET_P99_MS)) if bad) + ")"
        print(f"{name:<28} {p50:8.1f} {p95:8.1f} {p99:8.1f} {samples[-1]:8.1f} {size_text}  {verdict}")
        return ok

    for name, (samples, size) in results.items():
        everything += samples
        if not line(name, samples, size):
            failed.append(name)
    print("-" * len(header))
    overall_ok = line("overall", sorted(everything), None)
    print(f"targets: p50 <= {TARGET_P50_MS:.0f} ms and p99 <= {TARGET_P99_MS:.0f} ms (ms, nearest-rank percentiles)")
    print(f"overall: {'PASS' if overall_ok else 'FAIL'}; failing scenarios: {', '.join(failed) or 'none'}")
    return overall_ok and not failed


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1_000_000, help="tasks to seed (default 1,000,000)")
    parser.add_argument("--sessions", type=int, default=2_000, help="sessions in all (default 2,000)")
    parser.add_argument("--reseed", action="store_true", help="drop the database and seed it again")
    parser.add_argument("--requests", type=int, default=200, help="timed requests per scenario (default 200)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed requests per scenario first (default 10)")
    parser.add_argument("--org-rank", type=int, default=1,
                        help="benchmark the organisation with this size rank (1 = largest, ~40%% of tasks)")
    parser.add_argument("--no-http", action="store_true", help="only seed and print the query plans")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a latency target is missed")
    parser.add_argument("--allow-any-db", action="store_true", help="allow a database without 'bench' in its name")
    args = parser.parse_args()

    import dj_database_url

    database_url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    db = dj_database_url.parse(database_url)
    if db["ENGINE"] != "django.db.backends.postgresql":
        sys.exit("DATABASE_URL must point at Postgres")
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DJANGO_SETTINGS_MODULE": "ricloud_server.settings",
        "DJANGO_DEBUG": "0",
        "ALLOWED_HOSTS": "*",
        "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
    }
    env.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
    os.environ.update(env)
    print(f"database: {db['NAME']} on {db.get('HOST') or 'local socket'}:{db.get('PORT') or 5432}")

    import django

    django.setup()  # no database access yet: the seeder reads model defaults, the rest queries

    t0 = time.perf_counter()
    meta = prepare_database(db, env, args)

    from django.db import connection

    from tasks_app.models import Organisation, Task

    with connection.cursor() as cur:
        cur.execute(
            "SELECT o.id, count(*) FROM tasks_app_task t JOIN tasks_app_organisation o ON o.id = t.organisation_id"
            " WHERE o.slug LIKE %s GROUP BY o.id ORDER BY 2 DESC",
            ["bench-org-%"],
        )
        orgs = cur.fetchall()
    org_id, org_tasks = orgs[min(args.org_rank, len(orgs)) - 1]
    print(f"tasks: {Task.objects.count():,} in all; per organisation: "
          + ", ".join(f"{Organisation.objects.get(id=o).name}={n:,}" for o, n in orgs))
    print(f"benchmarked organisation: id {org_id} ({org_tasks:,} tasks)")
    token = ensure_bench_key(org_id)
    scenarios = build_scenarios(org_id, meta)
    explain_scenarios(scenarios, token)
    ok = True
    if not args.no_http:
        before = cpu_calibration()
        results = time_scenarios(scenarios, token, env, args.requests, args.warmup)
        ok = report(results, args.requests, args.warmup)
        print(f"cpu calibration loop: {before:.2f} s before, {cpu_calibration():.2f} s after (quiet machine: ~0.7 s)")
    print(f"\nbench finished in {time.perf_counter() - t0:.0f} s")
    return 0 if ok or not args.strict else 1


if __name__ == "__main__":
    sys.exit(main())
