#!/usr/bin/env python
"""Load benchmark: this project side by side with Flower 2.2 and plain Celery (run on demand only).

    .venv/bin/python bench/load.py [--tasks 2000] [--concurrency 16] [--duration 10]
                                   [--only submit,latency,lifecycle,recovery] [--skip-peers]
                                   [--recovery-tasks 6000] [--recovery-kill-after 300]
                                   [--recovery-in-flight 2000] [--rounds 5]

This project runs as the Procfile runs it (gunicorn, 2 uvicorn workers x 8 pool threads, a Celery worker
with concurrency 4 on queues tasks,webhooks, beat) against its own Postgres database (name must
contain "bench"; default ricloud_bench_load, created and migrated when missing, its tables emptied
at start) and its own Redis database number, DJANGO_DEBUG=0, rate limits off. The peers share the
Redis server (another database number): a Celery app with one no-op task (bench/peer_app.py) and
its own worker (concurrency 4), and Flower on top of it (installed into bench/.peer-venv, never
into the project's requirements).

Phases (--only picks among them):
  submit     1. c=16 throughput and p50/p99 for (a) v2 POST /submit-task/ (perform-2fa-challenge,
                the cheapest v2 action) and (b) v3 POST /polls with one info task, each vs Flower
                POST /api/task/async-apply/peer.noop; every backlog is drained after its phase.
  latency    2. submit -> terminal, one request at a time: POST /polls with Ricloud-Await (GET
                until completed if the answer is early) vs Flower async-apply +
                GET /api/task/result/<id>?timeout=10.
  lifecycle  3. N tasks (--tasks) submitted over HTTP at c=16 and waited for until all are
                terminal (counted in Postgres) vs plain Celery noop.delay() x N until all results.
  recovery   6. (in the default run, ~60 s) this project only, twice: with beat running, then with
                beat stopped (recovery then comes from the workers' own maintenance loop alone).
                --recovery-tasks tasks submitted over HTTP at c=16 (v2 submit-task; every 10th
                request a v3 POST /polls with one info task that asks the mock for a 50 ms delay,
                so that it is claimed) while the worker runs; once at least --recovery-kill-after
                tasks succeeded and --recovery-in-flight are in flight (or every request was
                answered), at an instant when a task is `processing` (up to 3 s of looking),
                SIGKILL of the whole worker process group at once while the submitters go on, 2 s,
                then a fresh worker from the Procfile line with default settings (lease 20 s,
                reaper every 5 s). Measures the seconds from the restart until every task of the
                run is terminal (Postgres), the re-run tasks (attempts > 1), when the tasks
                `processing` at the kill were all claimed again, and duplicates: tasks with more
                than one result, delivery or succeeded/failed event, polls with more than one
                `completed` event. Target: all terminal within 60 s of the restart, none
                duplicated, with at least 1,000 tasks in flight at the kill.
Phases 2 and 3 run in --rounds rounds (default 5) that alternate this project and its peer (ours,
peer, ours, peer, ...), the peer's stack started for its round alone (this project's idles
meanwhile): the machine's drift over a minute then falls on both sides of each round's ratio. Each round is printed; the tables and
targets take the round with the median ratio. --rounds 1 runs them once, this project's before
the peers', as earlier versions did.
Between this project's phases, once the backlog is drained, Postgres is quiesced (CHECKPOINT,
then VACUUM (ANALYZE) of the bench database), so that no phase pays for the writes of the one
before; the peers keep nothing in Postgres.
Measured alongside: 4. CPU ms per request/task of the web and worker process groups (utime+stime
from /proc/<pid>/stat of every process in the group, plus reaped children), and 5. Postgres wait
events of the bench database's active backends, sampled every 50 ms during the submit windows.

Prints `this project | peer | ratio` per measure, a final table and the targets (report only; the
exit code is 0 unless the benchmark itself broke). Every process it starts is in a process group of
its own and is stopped on exit, Ctrl-C or error.
"""
import argparse
import base64
import collections
import contextlib
import http.client
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlencode, urlsplit

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
DEFAULT_DATABASE_URL = "postgres://root@127.0.0.1:5432/ricloud_bench_load"
# Production mode (DATABASE_URL set) needs an encryption key for credentials: one per run.
os.environ.setdefault("RICLOUD_ENCRYPTION_KEYS", base64.urlsafe_b64encode(os.urandom(32)).decode())
DEFAULT_REDIS = "redis://127.0.0.1:6379"
WORKER_CONCURRENCY = 4  # the Procfile's default; the peer worker gets the same
FLOWER_VERSION = "2.2.0"
APP_NAME = "ricloud-bench-load"  # our own Postgres connections, left out of the wait-event samples
CLK_TCK = os.sysconf("SC_CLK_TCK")
TERMINAL = ("succeeded", "failed")
V2_ACCOUNT = "bench.load@example.com"
V3_INFO_POLL = {"info_types": ["account.info"]}
PHASES = ("submit", "latency", "lifecycle", "recovery")
RECOVERY_V3_EVERY = 10  # every 10th request of the recovery phase is a v3 poll (the rest v2 submit-task)
# The recovery phase's polls ask the mock for a short delay: a run that may wait is claimed
# (`processing`, with a lease), so the kill finds claimed tasks and the lease path is measured; the
# v2 no-op tasks run without a claim (DECISIONS 142) and are never seen `processing`.
RECOVERY_V3_POLL = {"info_types": ["account.info"], "mock": {"delay": 0.05}}
RECOVERY_TARGET_S = 60.0
LEASE_S, REAPER_S = 20.0, 5.0  # the settings' defaults (RICLOUD_TASK_LEASE_SECONDS, RICLOUD_REAPER_INTERVAL_SECONDS)
# Left out of the processes' environment: recovery is measured with the settings' defaults.
DEFAULTED = ("RICLOUD_TASK_LEASE_SECONDS", "RICLOUD_REAPER_INTERVAL_SECONDS", "RICLOUD_PENDING_GRACE_SECONDS",
             "RICLOUD_TASK_MAX_ATTEMPTS", "RICLOUD_MAINTENANCE_IN_WORKER", "CELERY_WORKER_PREFETCH_MULTIPLIER")

# --- processes --------------------------------------------------------------------------------

STARTED: list[subprocess.Popen] = []


def start(name, command, env, logdir, cwd=ROOT):
    """`command` through `sh -c exec` in a new session (its pid is the process group id)."""
    log = open(logdir / f"{name}.log", "ab")
    proc = subprocess.Popen(["sh", "-c", "exec " + command], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    proc.bench_name = name
    STARTED.append(proc)
    return proc


def stop(proc, timeout=15):
    if proc in STARTED:
        STARTED.remove(proc)
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; make sure nothing of its group lingers (prefork children).
        if not group_pids(proc.pid):
            break


def stop_all():
    for proc in list(reversed(STARTED)):
        stop(proc)


def group_pids(pgid):
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = read_stat(entry.name)
            if stat and int(stat[2]) == pgid:
                pids.append(int(entry.name))
    return pids


def read_stat(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(b")") + 2:].split()  # [0] = field 3 (state); [2] = pgrp; [11:15] = u/s/cu/cs time


def group_cpu(pgid) -> float:
    """CPU seconds of every live process of the group (utime+stime) plus the reaped children of
    each (cutime+cstime): a child's time moves into its parent's only when it dies."""
    total = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = read_stat(entry.name)
            if stat and int(stat[2]) == pgid:
                total += sum(int(x) for x in stat[11:15])
    return total / CLK_TCK


class Groups:
    """Named process groups whose CPU is read together."""

    def __init__(self, **procs):
        self.procs = procs

    def cpu(self) -> dict:
        return {name: group_cpu(proc.pid) for name, proc in self.procs.items()}

    def check(self):
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}")


def cpu_delta(before, after):
    return {name: after[name] - before[name] for name in before}


def procfile() -> dict:
    lines = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if ":" in line and not line.startswith("#"):
            name, command = line.split(":", 1)
            lines[name.strip()] = command.strip()
    return lines


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_calibration() -> float:
    """Seconds of a fixed CPU loop (as in tasks_list.py: ~0.7 s on a quiet machine here)."""
    t0 = time.perf_counter()
    sum(i * i for i in range(10**7))
    return time.perf_counter() - t0


# --- HTTP -------------------------------------------------------------------------------------


class Client:
    """One keep-alive http.client connection (one per load thread); reconnects when dropped."""

    def __init__(self, base, headers=None, timeout=30):
        parts = urlsplit(base)
        self.host, self.port, self.timeout = parts.hostname, parts.port, timeout
        self.headers = dict(headers or {})
        self.conn = None

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(self, method, path, body=None, headers=None):
        h = {**self.headers, **(headers or {})}
        if isinstance(body, dict):
            body = json.dumps(body)
            h.setdefault("Content-Type", "application/json")
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=body, headers=h)
                response = self.conn.getresponse()
                data = response.read()
            except (http.client.HTTPException, ConnectionError, TimeoutError, OSError):
                # A keep-alive connection the server had closed: one retry on a fresh one.
                self.close()
                if attempt:
                    raise
                continue
            if response.will_close:
                self.close()
            return response.status, data
        raise AssertionError("unreachable")

    def json(self, method, path, body=None, headers=None, expect=(200, 201)):
        status, data = self.request(method, path, body, headers)
        if status not in expect:
            raise RuntimeError(f"{method} {path} -> {status}: {data[:300]!r}")
        return json.loads(data)


def wait_http(url_path, client, procs, timeout=90, ok=(200,)):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        procs.check()
        try:
            status, data = client.request("GET", url_path)
            if status in ok:
                return
            last = f"{status} {data[:200]!r}"
        except Exception as exc:  # noqa: BLE001 - not up yet
            last = repr(exc)
        time.sleep(0.25)
    raise RuntimeError(f"GET {url_path} not ready after {timeout} s: {last}")


# --- measuring --------------------------------------------------------------------------------


def percentile(values, q):
    """Nearest rank, of a sorted list."""
    if not values:
        return float("nan")
    return values[max(1, math.ceil(q / 100 * len(values))) - 1]


class PgWaits(threading.Thread):
    """Samples wait_event_type/wait_event of the bench database's active backends every ~50 ms
    while a window is open; each window's samples are kept under its label."""

    def __init__(self, dsn_kwargs, dbname, interval=0.05):
        super().__init__(daemon=True)
        self.dsn_kwargs, self.dbname, self.interval = dsn_kwargs, dbname, interval
        self.label = None
        self.windows = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()

    def open(self, label):
        with self.lock:
            self.windows[label] = {"samples": 0, "backends": 0, "events": collections.Counter()}
            self.label = label

    def close(self):
        with self.lock:
            self.label = None

    def run(self):
        import psycopg2

        conn = psycopg2.connect(application_name=APP_NAME + "-sampler", **self.dsn_kwargs)
        conn.autocommit = True
        cur = conn.cursor()
        while not self.stopped.is_set():
            label = self.label
            if label is None:
                time.sleep(self.interval / 2)
                continue
            t0 = time.perf_counter()
            cur.execute(
                "SELECT coalesce(wait_event_type, 'CPU'), coalesce(wait_event, '-') FROM pg_stat_activity"
                " WHERE datname = %s AND state = 'active' AND pid <> pg_backend_pid()"
                " AND application_name NOT LIKE %s",
                (self.dbname, APP_NAME + "%"),
            )
            rows = cur.fetchall()
            with self.lock:
                window = self.windows.get(label)
                if window is not None and self.label == label:
                    window["samples"] += 1
                    window["backends"] += len(rows)
                    window["events"].update(f"{t}:{e}" if t != "CPU" else "CPU (no wait)" for t, e in rows)
            time.sleep(max(0.0, self.interval - (time.perf_counter() - t0)))
        conn.close()

    def summary(self, labels):
        samples = backends = 0
        events = collections.Counter()
        for label in labels:
            window = self.windows.get(label)
            if window:
                samples += window["samples"]
                backends += window["backends"]
                events.update(window["events"])
        return samples, backends, events


def run_load(make_client, do_request, concurrency, duration, warmup, groups=None, sampler=None, label=None,
             total=None):
    """`concurrency` threads, each with its own keep-alive client, call `do_request(client)` ->
    (ok, id) until `warmup + duration` seconds have passed (or `total` requests were made).
    Requests started after the warm-up and finished before the end are timed and counted.
    CPU of `groups` is read at start, after the warm-up and at the end."""
    clients = [make_client() for _ in range(concurrency)]
    barrier = threading.Barrier(concurrency + 1)
    lock = threading.Lock()
    out = {"lat": [], "ids": [], "errors": 0, "error": None, "made": 0}
    marks = {}

    def worker(client):
        lat, ids, errors, error = [], [], 0, None
        barrier.wait()
        t_measure, t_end = marks["measure"], marks["end"]
        while True:
            if total is not None:
                with lock:
                    if out["made"] >= total:
                        break
                    out["made"] += 1
            t0 = time.perf_counter()
            if t0 >= t_end:
                break
            try:
                ok, ident = do_request(client)
            except Exception as exc:  # noqa: BLE001 - counted and shown
                ok, ident, error = False, None, repr(exc)
                time.sleep(0.01)
            t1 = time.perf_counter()
            if ident is not None:
                ids.append(ident)
            if not ok:
                errors += 1
            elif t0 >= t_measure and t1 <= t_end:
                lat.append(t1 - t0)
        client.close()
        with lock:
            out["lat"].extend(lat)
            out["ids"].extend(ids)
            out["errors"] += errors
            out["error"] = out["error"] or error

    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in clients]
    for t in threads:
        t.start()
    now = time.perf_counter()
    marks["start"], marks["measure"] = now, now + warmup
    marks["end"] = marks["measure"] + duration if total is None else float("inf")
    cpu = {"start": groups.cpu() if groups else {}}
    barrier.wait()
    if total is None:
        time.sleep(max(0.0, marks["measure"] - time.perf_counter()))
        cpu["measure"] = groups.cpu() if groups else {}
        if sampler:
            sampler.open(label)
        time.sleep(max(0.0, marks["end"] - time.perf_counter()))
        cpu["end"] = groups.cpu() if groups else {}
        if sampler:
            sampler.close()
    elif sampler:
        sampler.open(label)
    for t in threads:
        t.join()
    if total is not None:
        marks["end"] = time.perf_counter()
        cpu["measure"], cpu["end"] = cpu["start"], groups.cpu() if groups else {}
        if sampler:
            sampler.close()
    out["lat"].sort()
    out["elapsed"] = (marks["end"] - marks["measure"]) if total is None else marks["end"] - marks["start"]
    out["cpu"] = cpu
    out["t_start"] = marks["start"]
    return out


def wait_until(predicate, timeout, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# --- this project -----------------------------------------------------------------------------


class Ours:
    def __init__(self, args, logdir):
        import dj_database_url
        import psycopg2

        self.args, self.logdir = args, logdir
        db = dj_database_url.parse(args.database_url)
        self.dbname = db["NAME"]
        if "bench" not in self.dbname:
            raise SystemExit(f"refusing database {self.dbname!r}: its name must contain 'bench' (it is emptied)")
        self.dsn = {k: v for k, v in {"host": db.get("HOST"), "port": db.get("PORT"), "user": db.get("USER"),
                                      "password": db.get("PASSWORD")}.items() if v}
        self.psycopg2 = psycopg2
        self.broker = f"{args.redis_url}/{args.redis_db}"
        self.var = logdir / "var"
        bin_dir = ROOT / ".venv" / "bin" if (ROOT / ".venv" / "bin").is_dir() else Path(sys.executable).parent
        self.env = {k: v for k, v in os.environ.items() if k not in ("WEB_CONCURRENCY", "WEB_THREADS",
                                                                      "WORKER_CONCURRENCY", "PORT") + DEFAULTED}
        self.env.update({
            "DATABASE_URL": args.database_url, "CELERY_BROKER_URL": self.broker, "REDIS_URL": self.broker,
            "DJANGO_SETTINGS_MODULE": "ricloud_server.settings", "DJANGO_DEBUG": "0", "ALLOWED_HOSTS": "*",
            "RICLOUD_RATE_LIMIT_ORGANISATION": "", "RICLOUD_RATE_LIMIT_KEY": "", "RICLOUD_VAR_DIR": str(self.var),
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONUNBUFFERED": "1",
        })
        self.python = str(bin_dir / "python")
        self.conn = None

    # database and Redis
    def connect(self, dbname=None):
        conn = self.psycopg2.connect(dbname=dbname or self.dbname, application_name=APP_NAME, **self.dsn)
        conn.autocommit = True
        return conn

    def prepare(self):
        admin = self.connect("postgres")
        with admin.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.dbname,))
            if not cur.fetchone():
                cur.execute(f'CREATE DATABASE "{self.dbname}"')
                print(f"created database {self.dbname}")
        admin.close()
        t0 = time.perf_counter()
        subprocess.run([self.python, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=self.env,
                       check=True)
        print(f"migrate: {time.perf_counter() - t0:.1f} s")
        self.conn = self.connect()
        with self.conn.cursor() as cur:
            # Start empty: every table of the project's apps (the schema stays).
            cur.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename NOT LIKE 'django_%%'"
                " AND tablename NOT LIKE 'auth_%%'"
            )
            tables = [r[0] for r in cur.fetchall()]
            if tables:
                cur.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE")
        redis_flush(self.broker)
        out = subprocess.run([self.python, "manage.py", "createorganisation", f"Load bench {time.strftime('%H%M%S')}"],
                             cwd=ROOT, env=self.env, check=True, capture_output=True, text=True).stdout.split("\n")
        lines = [line for line in out if line.strip()]
        self.token = lines[-1].strip()
        self.organisation = int(lines[0].split("organisation ", 1)[1].split(" ", 1)[0])

    def start(self, with_beat=True):
        lines = procfile()
        self.port = free_port()
        self.proc_env = env = {**self.env, "PORT": str(self.port)}
        self.web = start("web", lines["web"], env, self.logdir)
        self.worker = start("worker", lines["worker"], env, self.logdir)
        self.worker_log = self.logdir / "worker.log"
        self.beat = None
        beat = self.start_beat() if with_beat else None
        self.regroup()
        self.base = f"http://127.0.0.1:{self.port}"
        self.headers = {"Authorization": f"Token {self.token}"}
        print(f"web:    {lines['web']}  (PORT={self.port})")
        print(f"worker: {lines['worker']}")
        print(f"beat:   {beat}" if with_beat else "beat:   not started")
        t0 = time.perf_counter()
        wait_http("/organisation", self.client(), self.groups)
        self.wait_worker_ready()
        print(f"ready in {time.perf_counter() - t0:.1f} s")
        c = self.client()
        user = c.json("POST", "/users", {"identifier": "bench-load"})["id"]
        session = c.json("POST", "/sessions", {"source": {"user": user, "type": "mocks.mock",
                                                           "identifier": "john.appleseed@reincubate.com"},
                                                "payload": {"password": "joshua"}}, {"Ricloud-Await": "10"})
        if session["state"] != "active":
            raise RuntimeError(f"bench session not active: {session}")
        self.session = session["id"]
        status, data = c.request("POST", "/register-account/", urlencode({"service": "icloud", "username": V2_ACCOUNT}),
                                 {"Content-Type": "application/x-www-form-urlencoded"})
        if status != 200:
            raise RuntimeError(f"register-account -> {status} {data[:200]!r}")
        c.close()

    def regroup(self):
        procs = {"web": self.web, "worker": self.worker}
        if self.beat is not None:
            procs["beat"] = self.beat
        self.groups = Groups(**procs)

    def start_beat(self) -> str:
        """Beat from the Procfile line (its schedule file in the run's log directory); returns the command."""
        beat = procfile()["beat"].replace("/tmp/celerybeat-schedule", str(self.logdir / "celerybeat-schedule"))
        self.beat = start("beat", beat, self.proc_env, self.logdir)
        self.regroup()
        return beat

    def stop_beat(self):
        if self.beat is not None:
            stop(self.beat)
            self.beat = None
            self.regroup()

    def kill_worker(self):
        """SIGKILL to every process of the worker's group at once (kill -9 -PGID); returns when
        none is left."""
        proc = self.worker
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        if proc in STARTED:
            STARTED.remove(proc)
        if not wait_until(lambda: not group_pids(proc.pid), 10, 0.05):
            raise RuntimeError(f"worker processes left after kill -9: {group_pids(proc.pid)}")

    def restart_worker(self, name):
        """A fresh worker from the Procfile line (default settings), logging to `name`.log."""
        self.worker = start(name, procfile()["worker"], self.proc_env, self.logdir)
        self.worker_log = self.logdir / f"{name}.log"
        self.regroup()
        return self.worker

    def wait_worker_ready(self, timeout=60):
        log = self.worker_log
        if not wait_until(lambda: b" ready." in log.read_bytes() if log.exists() else False, timeout, 0.2):
            raise RuntimeError(f"celery worker not ready after {timeout} s; see {log}")

    def client(self):
        return Client(self.base, self.headers)

    # requests
    V2_BODY = urlencode({"service": "icloud", "action": "perform-2fa-challenge", "account": V2_ACCOUNT})
    V2_HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}

    def submit_v2(self, client):
        status, data = client.request("POST", "/submit-task/", self.V2_BODY, self.V2_HEADERS)
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {data[:120]!r}")
        return True, json.loads(data)["task_id"]

    def create_poll(self, client, headers=None, payload=V3_INFO_POLL):
        status, data = client.request("POST", "/polls", {"session": self.session, "payload": payload}, headers)
        if status != 201:
            raise RuntimeError(f"HTTP {status}: {data[:120]!r}")
        return True, json.loads(data)["id"]

    # state in Postgres
    def unfinished(self) -> int:
        with self.conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM tasks_app_task WHERE organisation_id = %s AND state NOT IN %s",
                        (self.organisation, TERMINAL))
            return cur.fetchone()[0]

    def finished(self) -> int:
        with self.conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM tasks_app_task WHERE organisation_id = %s AND state IN %s",
                        (self.organisation, TERMINAL))
            return cur.fetchone()[0]

    def drain(self, timeout):
        t0 = time.perf_counter()
        done = wait_until(lambda: self.unfinished() == 0, timeout, 0.1)
        return done, time.perf_counter() - t0

    def quiesce(self):
        """Between phases, once the backlog is drained: the previous phase's writes checkpointed and
        the bench database vacuumed and analysed, so that a phase does not pay for the one before
        (a checkpoint or autovacuum of 20,000 new rows running under it), as the peers, which keep
        nothing in Postgres, never do."""
        t0 = time.perf_counter()
        try:
            with self.conn.cursor() as cur:
                cur.execute("CHECKPOINT")
                cur.execute("VACUUM (ANALYZE)")
        except self.psycopg2.Error as exc:  # e.g. not allowed to CHECKPOINT: measure anyway
            print(f"  (could not quiesce Postgres between phases: {exc.pgerror or exc})")
            return
        print(f"  (Postgres quiesced between phases: CHECKPOINT and VACUUM (ANALYZE), {time.perf_counter() - t0:.1f} s)")

    def stop(self):
        for proc in (self.beat, self.worker, self.web):
            if proc is not None:
                stop(proc)
        try:
            redis_flush(self.broker)
        except Exception:  # noqa: BLE001 - best effort
            pass


# --- peers ------------------------------------------------------------------------------------


def redis_flush(url):
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


def ensure_peer_venv(path: Path) -> str:
    """Flower (2.2.0, else the newest on the index) in a venv of its own; returns its version."""
    python = path / "bin" / "python"
    probe = [str(python), "-c", "import flower, celery, redis; print(flower.__version__)"]
    if python.exists():
        found = subprocess.run(probe, capture_output=True, text=True)
        if found.returncode == 0:
            return found.stdout.strip()
    import celery

    print(f"installing Flower into {path} ...")
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    celery_pin = f"celery[redis]=={celery.__version__}"
    if subprocess.run([*pip, f"flower=={FLOWER_VERSION}", celery_pin, "redis"]).returncode != 0:
        print(f"flower=={FLOWER_VERSION} is not on the index; installing the newest Flower")
        subprocess.run([*pip, "flower", celery_pin, "redis"], check=True)
    return subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()


class Peers:
    def __init__(self, args, logdir):
        self.args, self.logdir = args, logdir
        self.broker = f"{args.redis_url}/{args.peer_redis_db}"
        self.venv = Path(args.peer_venv).resolve()
        self.version = ensure_peer_venv(self.venv)
        self.env = {**os.environ, "PEER_BROKER_URL": self.broker, "FLOWER_UNAUTHENTICATED_API": "true",
                    "PYTHONPATH": str(BENCH), "PYTHONUNBUFFERED": "1",
                    "PATH": f"{self.venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.flower = None

    def start_worker(self):
        redis_flush(self.broker)
        os.environ["PEER_BROKER_URL"] = self.broker
        sys.path.insert(0, str(BENCH))
        import peer_app
        import redis

        self.app, self.noop = peer_app.app, peer_app.noop
        self.redis = redis.Redis.from_url(self.broker)
        command = f"celery -A peer_app worker --concurrency {WORKER_CONCURRENCY} --loglevel INFO"
        self.worker = start("peer-worker", command, self.env, self.logdir, cwd=BENCH)
        self.groups = Groups(worker=self.worker)
        print(f"peer worker: {command}  (celery {self.celery_version()}, broker {self.broker})")
        log = self.logdir / "peer-worker.log"
        if not wait_until(lambda: b" ready." in log.read_bytes() if log.exists() else False, 60, 0.2):
            raise RuntimeError(f"peer worker not ready; see {log}")
        self.noop.delay().get(timeout=30)  # warm

    def celery_version(self):
        return subprocess.run([str(self.venv / "bin" / "python"), "-c", "import celery; print(celery.__version__)"],
                              capture_output=True, text=True).stdout.strip()

    def start_flower(self):
        self.port = free_port()
        command = f"celery -A peer_app flower --address=127.0.0.1 --port={self.port}"
        self.flower = start("flower", command, self.env, self.logdir, cwd=BENCH)
        self.groups = Groups(web=self.flower, worker=self.worker)
        self.base = f"http://127.0.0.1:{self.port}"
        print(f"flower {self.version}: {command}")
        wait_http("/api/workers?refresh=1", Client(self.base), self.groups)
        ok, ident = self.async_apply(Client(self.base))
        assert ok, "Flower async-apply failed"

    def async_apply(self, client):
        status, data = client.request("POST", "/api/task/async-apply/peer.noop", {"args": []})
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {data[:120]!r}")
        return True, json.loads(data)["task-id"]

    def done_count(self, ids) -> int:
        done = 0
        for i in range(0, len(ids), 1000):
            done += self.redis.exists(*[f"celery-task-meta-{t}" for t in ids[i:i + 1000]])
        return done

    def drain(self, ids, timeout):
        t0 = time.perf_counter()
        ok = wait_until(lambda: self.done_count(ids) >= len(ids), timeout, 0.05)
        return ok, time.perf_counter() - t0

    def stop(self):
        if self.flower:
            stop(self.flower)
        stop(self.worker)
        try:
            redis_flush(self.broker)
        except Exception:  # noqa: BLE001
            pass


# --- phases -----------------------------------------------------------------------------------


def fmt(value, unit="", digits=1):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}{unit}"


def submit_phase(name, make_client, do_request, args, groups, sampler, drain, label=None):
    out = run_load(make_client, do_request, args.concurrency, args.duration, args.warmup, groups, sampler, label)
    ok, drain_s = drain(out["ids"])
    cpu_end = groups.cpu()
    lat = out["lat"]
    n = len(lat)
    web = cpu_delta(out["cpu"]["measure"], out["cpu"]["end"]).get("web")
    work = cpu_delta(out["cpu"]["start"], cpu_end).get("worker")
    result = {
        "rps": n / out["elapsed"], "p50": percentile(lat, 50) * 1000, "p99": percentile(lat, 99) * 1000,
        "n": n, "errors": out["errors"], "error": out["error"], "tasks": len(out["ids"]), "drain_s": drain_s,
        "drained": ok, "web_ms": web * 1000 / n if n and web is not None else None,
        "worker_ms": work * 1000 / len(out["ids"]) if out["ids"] and work is not None else None,
    }
    print(f"  {name}: {fmt(result['rps'])} req/s, p50 {fmt(result['p50'])} ms, p99 {fmt(result['p99'])} ms"
          f" ({n} timed, {out['errors']} errors{', ' + out['error'] if out['error'] else ''});"
          f" backlog of {len(out['ids'])} tasks drained in {drain_s:.1f} s{'' if ok else ' (NOT DRAINED)'};"
          f" web CPU {fmt(result['web_ms'], ' ms', 2)}/req, worker CPU {fmt(result['worker_ms'], ' ms', 2)}/task")
    return result


def poll_settled(poll) -> bool:
    """The poll is completed, or every one of its tasks is terminal."""
    tasks_done = poll["tasks_succeeded"] or poll["tasks_failed"]
    busy = poll["tasks_pending"] or poll["tasks_processing"] or poll["tasks_suspended"]
    return poll["state"] == "completed" or bool(tasks_done and not busy)


def ours_latency(ours, samples, warmup, limit=15.0):
    """POST /polls with Ricloud-Await: 10; when it answers before the poll settled, GET it every
    5 ms. Counts answers that came early and polls whose tasks all ended but whose state was still
    not `completed` (the await then runs to its cap)."""
    client = ours.client()
    times, early, lagging, stuck = [], 0, 0, 0
    for i in range(samples + warmup):
        t0 = time.perf_counter()
        poll = client.json("POST", "/polls", {"session": ours.session, "payload": V3_INFO_POLL},
                           {"Ricloud-Await": "10"})
        if poll["state"] != "completed":
            early += 1
        while not poll_settled(poll) and time.perf_counter() - t0 < limit:
            time.sleep(0.005)
            poll = client.json("GET", f"/polls/{poll['id']}")
        t1 = time.perf_counter()
        if not poll_settled(poll):
            stuck += 1
        elif poll["state"] != "completed":
            lagging += 1
        if i >= warmup:
            times.append(t1 - t0)
    client.close()
    times.sort()
    return times, early, lagging, stuck


def flower_latency(peers, samples, warmup):
    """async-apply, then GET /api/task/result/<id>?timeout=10. Flower's `state` is read before
    its wait; a `result` key means the wait saw the result. An answer without it (Flower's wait
    timed out, or returned early) is counted, and the result is then polled without `timeout`."""
    client = Client(peers.base)
    times, misses = [], []
    for i in range(samples + warmup):
        t0 = time.perf_counter()
        ok, task_id = peers.async_apply(client)
        if not ok:
            raise RuntimeError("Flower async-apply failed")
        status, data = client.request("GET", f"/api/task/result/{task_id}?timeout=10")
        if status != 200 or "result" not in json.loads(data):
            misses.append((time.perf_counter() - t0, status, data[:120]))
            while status != 200 or "result" not in json.loads(data):
                if time.perf_counter() - t0 > 30:
                    raise RuntimeError(f"Flower: no result for {task_id} after 30 s: {status} {data[:200]!r}")
                time.sleep(0.005)
                status, data = client.request("GET", f"/api/task/result/{task_id}")
        t1 = time.perf_counter()
        if i >= warmup:
            times.append(t1 - t0)
    client.close()
    times.sort()
    return times, misses


def ours_lifecycle(ours, args, sampler, api):
    before = ours.finished()
    request = ours.submit_v2 if api == "v2" else ours.create_poll
    out = run_load(ours.client, request, args.concurrency, 0, 0, ours.groups, sampler, f"lifecycle-{api}",
                   total=args.tasks)
    submitted = time.perf_counter() - out["t_start"]
    target = before + len(out["ids"])
    ok = wait_until(lambda: ours.finished() >= target, args.drain_timeout, 0.05)
    elapsed = time.perf_counter() - out["t_start"]
    cpu = cpu_delta(out["cpu"]["start"], ours.groups.cpu())
    n = len(out["ids"])
    with ours.conn.cursor() as cur:
        cur.execute("SELECT count(*) FILTER (WHERE state = 'failed'), count(*) FROM tasks_app_task"
                    " WHERE organisation_id = %s", (ours.organisation,))
        failed, total = cur.fetchone()
    return {"n": n, "errors": out["errors"], "submit_s": submitted, "elapsed": elapsed, "tps": n / elapsed,
            "done": ok, "web_ms": cpu["web"] * 1000 / n, "worker_ms": cpu["worker"] * 1000 / n,
            "beat_ms": cpu.get("beat", 0.0) * 1000 / n, "failed_total": failed, "tasks_total": total,
            "submit_p50": percentile(out["lat"], 50) * 1000, "submit_p99": percentile(out["lat"], 99) * 1000}


def plain_lifecycle(peers, args):
    cpu0 = peers.groups.cpu()
    c0 = time.thread_time()
    t0 = time.perf_counter()
    ids = [peers.noop.delay().id for _ in range(args.tasks)]
    sent = time.perf_counter() - t0
    client_cpu = time.thread_time() - c0
    ok = wait_until(lambda: peers.done_count(ids) >= len(ids), args.drain_timeout, 0.02)
    elapsed = time.perf_counter() - t0
    cpu = cpu_delta(cpu0, peers.groups.cpu())
    n = len(ids)
    return {"n": n, "submit_s": sent, "elapsed": elapsed, "tps": n / elapsed, "done": ok,
            "worker_ms": cpu["worker"] * 1000 / n, "client_ms": client_cpu * 1000 / n}


@contextlib.contextmanager
def peer_stack(args, logdir, flower: bool):
    """The peer's worker (and Flower) for one round, stopped after it: Flower turns the worker's
    events on (a third more worker CPU per task), and neither stack may run during the other's
    round."""
    peers = Peers(args, logdir)
    try:
        peers.start_worker()
        if flower:
            peers.start_flower()
        yield peers
    finally:
        peers.stop()


def plain_run_lifecycle(peers, args) -> dict:
    r = plain_lifecycle(peers, args)
    print(f"  plain Celery: {r['n']} noop.delay() sent in {r['submit_s']:.2f} s, all results after "
          f"{r['elapsed']:.2f} s{'' if r['done'] else ' (TIMED OUT)'}: {r['tps']:.1f} tasks/s; "
          f"CPU per task: worker {r['worker_ms']:.2f} ms, client {r['client_ms']:.2f} ms")
    return r


def flower_run_latency(peers, args) -> dict:
    times, misses = flower_latency(peers, args.samples, 3)
    flat = {"p50": percentile(times, 50) * 1000, "p95": percentile(times, 95) * 1000}
    print(f"  Flower submit->terminal (async-apply + result?timeout=10): p50 {fmt(flat['p50'])} ms, "
          f"p95 {fmt(flat['p95'])} ms, max {fmt(times[-1] * 1000)} ms ({len(times)} samples; "
          f"answers without the result: {len(misses)})")
    for elapsed, status, body in misses[:3]:
        print(f"    Flower answered after {elapsed * 1000:.0f} ms without the result: {status} {body!r}")
    return flat


def alternate(count, ours_round, peer_round, figure):
    """`count` rounds of `ours_round(number)` then `peer_round()` (None: this project only); returns
    the (ours, peer) results of the round whose ratio of `figure` is the median (the lower middle
    one when even)."""
    rounds = [(ours_round(number), peer_round() if peer_round else None) for number in range(count)]

    def key(pair):
        return (ratio(pair[0][figure], pair[1][figure]) or 0.0) if pair[1] else 0.0

    chosen = sorted(rounds, key=key)[(len(rounds) - 1) // 2]
    if len(rounds) > 1:
        print(f"  -> ratios of the {len(rounds)} rounds: {', '.join(f'{key(r):.2f}' for r in rounds)}; "
              f"the tables take the median round ({key(chosen):.2f})")
    return chosen


def recovery_phase(ours, args):
    """kill -9 of the whole worker group with thousands of tasks in flight, with beat or without
    (as `ours` runs); see the module docstring (phase 6)."""
    conn, org = ours.conn, ours.organisation
    with conn.cursor() as cur:
        cur.execute("SELECT now()")
        since = cur.fetchone()[0]
    scope = "organisation_id = %s AND date_created >= %s"

    def counts():
        with conn.cursor() as cur:
            cur.execute(f"SELECT count(*) FILTER (WHERE state = 'succeeded'), count(*) FILTER (WHERE state = 'failed'),"
                        f" count(*) FILTER (WHERE state = 'processing'), count(*) FILTER (WHERE state = 'pending'),"
                        f" count(*) FROM tasks_app_task WHERE {scope}", (org, since))
            return dict(zip(("succeeded", "failed", "processing", "pending", "total"), cur.fetchone(), strict=True))

    made = [0]
    made_lock = threading.Lock()

    def request(client):
        with made_lock:
            made[0] += 1
            i = made[0]
        if RECOVERY_V3_EVERY and i % RECOVERY_V3_EVERY == 0:
            return True, ("poll", ours.create_poll(client, payload=RECOVERY_V3_POLL)[1])
        return True, ("v2", ours.submit_v2(client)[1])

    n = args.recovery_tasks
    box = {}
    submitter = threading.Thread(daemon=True, target=lambda: box.update(out=run_load(
        ours.client, request, args.concurrency, 0, 0, total=n)))
    t0 = time.perf_counter()
    submitter.start()
    # Kill once enough tasks have succeeded and --recovery-in-flight are in flight (or every
    # request was answered), at an instant when some task is `processing` (up to 3 s of looking).
    # The submitters go on meanwhile: the web keeps accepting while the worker is dead.
    kill_after = min(args.recovery_kill_after, n)
    while True:
        ours.groups.check()
        c = counts()
        in_flight = c["total"] - c["succeeded"] - c["failed"]
        if c["succeeded"] >= kill_after and (in_flight >= args.recovery_in_flight or not submitter.is_alive()):
            break
        if time.perf_counter() - t0 > args.drain_timeout:
            raise RuntimeError(f"recovery: only {c['succeeded']} succeeded after {args.drain_timeout:g} s")
        time.sleep(0.02)
    t_aim = time.perf_counter()
    seen = []
    with conn.cursor() as cur:
        while time.perf_counter() - t_aim < 3.0:
            cur.execute("SELECT id FROM tasks_app_task WHERE organisation_id = %s AND state = 'processing'", (org,))
            seen = [row[0] for row in cur.fetchall()]
            if seen:
                break
            time.sleep(0.002)
    aim_s = time.perf_counter() - t_aim
    old = ours.worker
    ours.kill_worker()
    t_kill = time.perf_counter()
    c = counts()
    in_flight = c["total"] - c["succeeded"] - c["failed"]  # at the kill (the submitters go on)
    submitter.join()
    out = box.get("out") or {"ids": [], "errors": 0, "error": "the submitting threads broke", "elapsed": float("nan")}
    time.sleep(0.5)  # commits the dead processes had sent are done; their open transactions rolled back
    at_kill = counts()
    with conn.cursor() as cur:
        cur.execute(f"SELECT id, attempts FROM tasks_app_task WHERE {scope} AND state = 'processing'", (org, since))
        held = cur.fetchall()
    seen_still = len(set(seen) & {row[0] for row in held})
    print(f"  aiming: {len(seen)} task(s) seen `processing` after {aim_s * 1000:.0f} ms, {seen_still} of them still "
          f"`processing` after the kill")
    print(f"  kill -9 of the worker group {old.pid} {t_kill - t0:.1f} s after the first request, {in_flight} tasks in "
          f"flight; {len(out['ids'])} requests answered ({out['errors']} errors) in {out['elapsed']:.1f} s; after the "
          f"last answer: {at_kill['succeeded']} succeeded, {at_kill['failed']} failed, {at_kill['processing']} "
          f"processing, {at_kill['pending']} pending")
    time.sleep(max(0.0, 2.0 - (time.perf_counter() - t_kill)))
    ours.restart_worker(f"worker-restarted-{'beat' if ours.beat is not None else 'no-beat'}")
    t_restart = time.perf_counter()
    ready_s = None
    held_ids = [str(r[0]) for r in held]
    held_attempts = [r[1] for r in held]
    reclaimed_s = None if held else 0.0
    done_s = rest_s = None
    last = None
    deadline = t_restart + args.drain_timeout
    while time.perf_counter() < deadline:
        ours.groups.check()
        if ready_s is None and b" ready." in (ours.worker_log.read_bytes() if ours.worker_log.exists() else b""):
            ready_s = time.perf_counter() - t_restart
        now = time.perf_counter()
        if reclaimed_s is None:
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM unnest(%s::uuid[], %s::int[]) AS k(id, attempts)"
                            " JOIN tasks_app_task t ON t.id = k.id WHERE t.attempts > k.attempts",
                            (held_ids, held_attempts))
                if cur.fetchone()[0] == len(held_ids):
                    reclaimed_s = now - t_kill
        last = counts()
        if rest_s is None and last["total"] - last["succeeded"] - last["failed"] <= len(held_ids):
            rest_s = now - t_restart  # all but (at most) the tasks the dead worker held
        if last["succeeded"] + last["failed"] >= last["total"]:
            done_s = now - t_restart
            break
        time.sleep(0.1)
    if done_s is not None and reclaimed_s is None:
        reclaimed_s = float("nan")  # ended without a new claim (should not happen)
    # Let anything re-sent twice reach the worker before duplicates are counted: the queue empty, then 1 s.
    import redis

    broker = redis.Redis.from_url(ours.broker)
    wait_until(lambda: broker.llen("tasks") == 0, 15, 0.2)
    broker.close()
    time.sleep(1.0)
    with conn.cursor() as cur:
        tasks = f"SELECT id FROM tasks_app_task WHERE {scope}"
        cur.execute(f"SELECT count(*) FILTER (WHERE attempts > 1), count(*) FILTER (WHERE state = 'failed'),"
                    f" max(attempts), count(*) FROM tasks_app_task WHERE {scope}", (org, since))
        rerun, failed, max_attempts, total = cur.fetchone()
        dup = {}
        cur.execute(f"SELECT count(*) FROM (SELECT task_id FROM tasks_app_result WHERE task_id IN ({tasks})"
                    " GROUP BY task_id HAVING count(*) > 1) d", (org, since))
        dup["results"] = cur.fetchone()[0]
        cur.execute(f"SELECT count(*) FROM (SELECT task_id FROM tasks_app_delivery WHERE task_id IN ({tasks})"
                    " GROUP BY task_id HAVING count(*) > 1) d", (org, since))
        dup["deliveries"] = cur.fetchone()[0]
        cur.execute(f"SELECT count(*) FROM (SELECT object_id FROM tasks_app_event WHERE organisation_id = %s"
                    f" AND type = 'task' AND action IN ('succeeded', 'failed') AND object_id IN"
                    f" (SELECT id::text FROM tasks_app_task WHERE {scope}) GROUP BY object_id HAVING count(*) > 1) d",
                    (org, org, since))
        dup["events"] = cur.fetchone()[0]
        cur.execute(f"SELECT count(*) FROM (SELECT object_id FROM tasks_app_event WHERE organisation_id = %s"
                    f" AND type = 'poll' AND action = 'completed' AND object_id IN (SELECT DISTINCT poll_id::text"
                    f" FROM tasks_app_task WHERE {scope} AND poll_id IS NOT NULL)"
                    f" GROUP BY object_id HAVING count(*) > 1) d", (org, org, since))
        dup["poll events"] = cur.fetchone()[0]
        cur.execute(f"SELECT count(*) FILTER (WHERE state <> 'completed'), count(*) FROM tasks_app_poll WHERE id IN"
                    f" (SELECT DISTINCT poll_id FROM tasks_app_task WHERE {scope} AND poll_id IS NOT NULL)",
                    (org, since))
        polls_open, polls = cur.fetchone()
        cur.execute(f"SELECT count(*) FROM tasks_app_task t WHERE {scope} AND state = 'succeeded' AND NOT EXISTS"
                    " (SELECT 1 FROM tasks_app_result r WHERE r.task_id = t.id)", (org, since))
        no_result = cur.fetchone()[0]
    polls_submitted = sum(1 for kind, _ in out["ids"] if kind == "poll")
    r = {"n": n, "submitted": len(out["ids"]), "polls": polls_submitted, "errors": out["errors"],
         "error": out["error"], "tasks": total, "at_kill": at_kill, "in_flight": in_flight,
         "backlog": at_kill["total"] - at_kill["succeeded"] - at_kill["failed"], "submit_s": out.get("elapsed"),
         "kill_s": t_kill - t0, "ready_s": ready_s, "rest_s": rest_s,
         "reclaimed_s": reclaimed_s, "held": len(held_ids), "done_s": done_s, "last": last, "rerun": rerun,
         "failed": failed, "max_attempts": max_attempts, "dup": dup, "polls_open": polls_open, "polls_total": polls,
         "no_result": no_result}
    r["duplicated"] = sum(dup.values())
    r["ok"] = done_s is not None and done_s <= RECOVERY_TARGET_S and r["duplicated"] == 0 and not polls_open
    return r


def print_recovery(r):
    k = r["at_kill"]
    dup = r["dup"]
    after = "not all terminal" if r["done_s"] is None else f"all terminal {r['done_s']:.1f} s after restart"
    print(f"  recovery: {r['tasks']} tasks ({r['submitted']} requests, {r['polls']} of them v3 polls; "
          f"{r['errors']} errors{', ' + r['error'] if r['error'] else ''}), killed with {r['in_flight']} in flight, "
          f"{r['backlog']} once every request was answered ({k['processing']} processing, {k['pending']} pending; "
          f"{k['succeeded']} succeeded), {after}, {r['rerun']} re-run "
          f"(max attempts {r['max_attempts']}), {r['failed']} failed, "
          f"{dup['results']}/{dup['deliveries']}/{dup['events']} duplicated results/deliveries/events, "
          f"{dup['poll events']} duplicated poll `completed` events, {r['polls_open']}/{r['polls_total']} polls "
          f"not completed, {r['no_result']} succeeded tasks without a result")
    reclaimed = "n/a" if r["reclaimed_s"] is None else f"{r['reclaimed_s']:.1f} s"
    print(f"  recovery: restarted worker ready {fmt(r['ready_s'], ' s')} after restart; all but the {r['held']} "
          f"tasks `processing` at the kill terminal {fmt(r['rest_s'], ' s')} after restart; those claimed again "
          f"{reclaimed} after the kill (lease {LEASE_S:g} s, reaper every {REAPER_S:g} s)")
    if not r["held"]:
        print("  recovery: no task was `processing` at the kill: the lease path was not exercised in this run")
    if r["in_flight"] < 1000:
        print(f"  recovery: only {r['in_flight']} in flight at the kill, not thousands: raise --recovery-tasks")
    if r["done_s"] is None:
        last = r["last"] or {}
        print(f"  recovery: NOT all terminal: {last}")


# --- main -------------------------------------------------------------------------------------


def ratio(a, b):
    if a is None or b is None or not b or (isinstance(a, float) and math.isnan(a)):
        return None
    return a / b


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=2000, help="tasks of the full-lifecycle phase (default 2000)")
    parser.add_argument("--concurrency", type=int, default=16, help="client threads of the throughput phases")
    parser.add_argument("--duration", type=float, default=10.0, help="timed seconds per throughput phase")
    parser.add_argument("--warmup", type=float, default=1.0, help="untimed seconds before each throughput phase")
    parser.add_argument("--samples", type=int, default=50, help="sequential samples of the latency phase")
    parser.add_argument("--only", default=",".join(PHASES), help="phases: " + ",".join(PHASES))
    parser.add_argument("--skip-peers", action="store_true", help="measure this project only")
    parser.add_argument("--lifecycle-api", choices=("v2", "v3"), default="v2",
                        help="how the lifecycle phase submits: v2 submit-task (default) or v3 POST /polls")
    parser.add_argument("--rounds", type=int, default=5,
                        help="alternating rounds (this project, peer) of the latency and lifecycle phases (default 5)")
    parser.add_argument("--recovery-tasks", type=int, default=6000, help="tasks of the recovery phase (default 6000)")
    parser.add_argument("--recovery-kill-after", type=int, default=300,
                        help="recovery: kill -9 the worker once at least this many succeeded (default 300) and "
                             "--recovery-in-flight are in flight or all were submitted")
    parser.add_argument("--recovery-in-flight", type=int, default=2000,
                        help="recovery: tasks in flight that trigger the kill (default 2000)")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL))
    parser.add_argument("--redis-url", default=DEFAULT_REDIS, help="Redis server (no database number)")
    parser.add_argument("--redis-db", type=int, default=10, help="this project's Redis database (flushed)")
    parser.add_argument("--peer-redis-db", type=int, default=11, help="the peers' Redis database (flushed)")
    parser.add_argument("--peer-venv", default=str(BENCH / ".peer-venv"))
    parser.add_argument("--drain-timeout", type=float, default=180.0, help="longest wait for a backlog")
    parser.add_argument("--keep-logs", action="store_true", help="keep the process logs after a successful run")
    args = parser.parse_args()
    phases = {p.strip() for p in args.only.split(",") if p.strip()}
    unknown = phases - set(PHASES)
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    if args.redis_db == args.peer_redis_db:
        parser.error("--redis-db and --peer-redis-db must differ")

    def on_term(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    logdir = Path(tempfile.mkdtemp(prefix="ricloud-load-"))
    results = {}
    started = time.perf_counter()
    print(f"bench/load.py  {time.strftime('%Y-%m-%d %H:%M')}  {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.2f}; cpu calibration {cpu_calibration():.2f} s (quiet: ~0.7 s)")
    print(f"phases: {', '.join(p for p in PHASES if p in phases)}; "
          f"c={args.concurrency}, {args.duration:g} s timed (+{args.warmup:g} s warm-up) per throughput phase, "
          f"{args.tasks} lifecycle tasks ({args.lifecycle_api}), {args.recovery_tasks} recovery tasks")
    sampler = None
    succeeded = False
    try:
        # ---- this project
        print("\n== this project ==")
        ours = Ours(args, logdir)
        ours.prepare()
        ours.start(with_beat=bool(phases - {"recovery"}))
        sampler = PgWaits(ours.dsn, ours.dbname)
        sampler.start()

        def ours_drain(ids):
            return ours.drain(args.drain_timeout)

        if "submit" in phases:
            results["v2"] = submit_phase("v2 POST /submit-task/ (perform-2fa-challenge)", ours.client, ours.submit_v2,
                                         args, ours.groups, sampler, ours_drain, "submit-v2")
            results["v3"] = submit_phase("v3 POST /polls (1 info task)", ours.client, ours.create_poll,
                                         args, ours.groups, sampler, ours_drain, "submit-v3")
        interleave = args.rounds > 1 and not args.skip_peers and bool(phases & {"latency", "lifecycle"})
        if interleave:
            print("  (phases 2 and 3: rounds alternate this project and its peer, the peer's stack started for"
                  " its round alone)")
        count = args.rounds if interleave else 1

        def label(number):
            return f"round {number + 1}: " if interleave else ""

        def latency_round(number):
            times, early, lagging, stuck = ours_latency(ours, args.samples, 3)
            lat = {"p50": percentile(times, 50) * 1000, "p95": percentile(times, 95) * 1000}
            print(f"  {label(number)}submit->terminal (POST /polls + Ricloud-Await): p50 {fmt(lat['p50'])} ms, "
                  f"p95 {fmt(lat['p95'])} ms, max {fmt(times[-1] * 1000)} ms ({len(times)} samples; answered before "
                  f"`completed`: {early}, of which tasks all ended but poll not completed: {lagging}, not settled "
                  f"within 15 s: {stuck})")
            return lat

        def lifecycle_round(number):
            if phases & {"submit", "latency"} or number:
                ours.quiesce()
            r = ours_lifecycle(ours, args, sampler, args.lifecycle_api)
            print(f"  {label(number)}lifecycle: {r['n']} {args.lifecycle_api} tasks submitted in {r['submit_s']:.1f} s "
                  f"(submit p50 {fmt(r['submit_p50'])} ms, p99 {fmt(r['submit_p99'])} ms, {r['errors']} errors), "
                  f"all terminal after {r['elapsed']:.1f} s{'' if r['done'] else ' (TIMED OUT)'}: "
                  f"{r['tps']:.1f} tasks/s; CPU per task: web {r['web_ms']:.2f} ms, worker {r['worker_ms']:.2f} ms, "
                  f"beat {r['beat_ms']:.2f} ms; failed tasks in the org so far: {r['failed_total']}/{r['tasks_total']}")
            return r

        def peer_round(flower, measure):
            def run():
                with peer_stack(args, logdir, flower=flower) as peers:
                    return measure(peers, args)
            return run if interleave else None

        if "latency" in phases:
            if "submit" in phases:
                ours.quiesce()
            results["lat"], flat = alternate(count, latency_round, peer_round(True, flower_run_latency), "p50")
            if flat is not None:
                results["flat"] = flat
        if "lifecycle" in phases:
            results["life"], plain = alternate(count, lifecycle_round, peer_round(False, plain_run_lifecycle), "tps")
            if plain is not None:
                results["plain"] = plain
        if "recovery" in phases:
            # Twice: with beat, then with beat stopped (the workers' own maintenance loop alone).
            for beat in (True, False):
                if beat and ours.beat is None:
                    ours.start_beat()
                if not beat:
                    ours.stop_beat()
                print(f"  (recovery with {'beat running' if beat else 'beat stopped'})")
                if phases - {"recovery"} or not beat:
                    ours.drain(args.drain_timeout)
                    ours.quiesce()
                r = results["recovery-beat" if beat else "recovery"] = recovery_phase(ours, args)
                print_recovery(r)
        sampler.stopped.set()
        results["ours_cpu_total"] = ours.groups.cpu()
        ours.stop()

        # ---- peers
        if not args.skip_peers and phases - {"recovery"}:
            print("\n== peers (plain Celery, then Flower) ==")
            peers = Peers(args, logdir)
            peers.start_worker()
            if "lifecycle" in phases and "plain" not in results:
                results["plain"] = plain_run_lifecycle(peers, args)
            if phases & {"submit", "latency"} and peers.flower is None:
                peers.start_flower()
            if "submit" in phases:
                def flower_client():
                    return Client(peers.base)

                results["flower"] = submit_phase(
                    "Flower POST /api/task/async-apply/peer.noop", flower_client, peers.async_apply, args,
                    peers.groups, None, lambda ids: peers.drain(ids, args.drain_timeout))
            if "latency" in phases and "flat" not in results:
                results["flat"] = flower_run_latency(peers, args)
            peers.stop()
        succeeded = True
    finally:
        if sampler:
            sampler.stopped.set()
        stop_all()
        shutil.rmtree(logdir / "var", ignore_errors=True)
        if not succeeded:
            print(f"\nprocess logs kept in {logdir}", file=sys.stderr)
    report(results, args, sampler, phases)
    if not args.keep_logs:
        shutil.rmtree(logdir, ignore_errors=True)
    print(f"\ncpu calibration {cpu_calibration():.2f} s; load average {os.getloadavg()[0]:.2f}; "
          f"run time {time.perf_counter() - started:.0f} s" + (f"; logs in {logdir}" if args.keep_logs else ""))


def report(results, args, sampler, phases):
    rows = []
    g = results.get

    def row(label, ours, peer, peer_name, unit="", digits=1):
        rows.append((label, fmt(ours, unit, digits), f"{fmt(peer, unit, digits)} {peer_name}" if peer_name else "",
                     fmt(ratio(ours, peer), "x", 2)))

    fl = g("flower") or {}
    for key, label in (("v2", "1a v2 submit-task"), ("v3", "1b v3 POST /polls")):
        r = g(key)
        if r:
            row(f"{label} req/s (c={args.concurrency})", r["rps"], fl.get("rps"), "flower")
            row(f"{label} p50", r["p50"], fl.get("p50"), "flower", " ms")
            row(f"{label} p99", r["p99"], fl.get("p99"), "flower", " ms")
    if g("lat"):
        row("2 submit->terminal p50", g("lat")["p50"], (g("flat") or {}).get("p50"), "flower", " ms")
        row("2 submit->terminal p95", g("lat")["p95"], (g("flat") or {}).get("p95"), "flower", " ms")
    if g("life"):
        row(f"3 lifecycle tasks/s (N={args.tasks}, {args.lifecycle_api})", g("life")["tps"],
            (g("plain") or {}).get("tps"), "celery")
    for key, label in (("v2", "1a"), ("v3", "1b")):
        r = g(key)
        if r:
            row(f"4 web CPU ms/request ({label})", r["web_ms"], fl.get("web_ms"), "flower", "", 2)
            row(f"4 worker CPU ms/task ({label} backlog)", r["worker_ms"], fl.get("worker_ms"), "flower", "", 2)
    if g("life"):
        row("4 web CPU ms/task (3)", g("life")["web_ms"], (g("plain") or {}).get("client_ms"), "delay() client", "", 2)
        row("4 worker CPU ms/task (3)", g("life")["worker_ms"], (g("plain") or {}).get("worker_ms"), "celery", "", 2)
        plain = g("plain")
        row("4 web+worker+beat CPU ms/task (3)", g("life")["web_ms"] + g("life")["worker_ms"] + g("life")["beat_ms"],
            plain and plain["client_ms"] + plain["worker_ms"], "celery+client", "", 2)
    if rows:
        print("\n== results (ratio = this project / peer) ==")
        widths = [max(len(r[i]) for r in rows + [("measure", "this project", "peer", "ratio")]) for i in range(4)]
        header = ("measure", "this project", "peer", "ratio")
        print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
        print("-+-".join("-" * w for w in widths))
        for r in rows:
            print(" | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                             enumerate(zip(r, widths, strict=True))))

    if sampler and sampler.windows:
        print("\n== 5. Postgres wait events of active backends during the submit windows (this project) ==")
        for labels, title in ((["submit-v2"], "1a v2 submit-task"), (["submit-v3"], "1b v3 POST /polls"),
                              ([f"lifecycle-{args.lifecycle_api}"], "3 lifecycle submit")):
            samples, backends, events = sampler.summary(labels)
            if not samples:
                continue
            lock = sum(v for k, v in events.items() if k.startswith("Lock:"))
            top = ", ".join(f"{k} {v * 100 / backends:.0f}%" for k, v in events.most_common(6)) if backends else "-"
            print(f"  {title}: {samples} samples, {backends / samples:.2f} active backends on average; "
                  f"Lock waits {lock * 100 / backends if backends else 0:.1f}% of backend samples; {top}")

    print("\n== targets (report only) ==")

    def target(name, ok, detail):
        print(f"  {'PASS' if ok else ('FAIL' if ok is not None else 'n/a ')}  {name}: {detail}")

    for key, factor, label in (("v2", 1.0, "v2 submit-task"), ("v3", 0.5, "v3 create poll")):
        r = g(key)
        if r is None:
            continue
        rt = ratio(r["rps"], fl.get("rps"))
        ok = None if rt is None else (rt >= factor and r["p99"] <= 100)
        target(f"{label} >= {factor:g}x Flower async-apply, p99 <= 100 ms at c={args.concurrency}", ok,
               f"{fmt(rt, 'x', 2)} Flower, p99 {fmt(r['p99'])} ms")
    if g("lat"):
        rt = ratio(g("lat")["p50"], (g("flat") or {}).get("p50"))
        target("submit->terminal p50 <= 2x Flower", None if rt is None else rt <= 2, f"{fmt(rt, 'x', 2)}")
    if g("life"):
        rt = ratio(g("life")["tps"], (g("plain") or {}).get("tps"))
        target("full lifecycle >= 0.3x plain Celery tasks/s", None if rt is None else rt >= 0.3, f"{fmt(rt, 'x', 2)}")
        w = g("life")["worker_ms"]
        target("worker CPU <= 4 ms per no-op task", w <= 4, f"{w:.2f} ms (lifecycle phase)")
    for key, how in (("recovery-beat", "beat running"), ("recovery", "beat stopped")):
        r = g(key)
        if not r:
            continue
        dup = r["dup"]
        target(f"after kill -9 of every worker with thousands of tasks in flight, {how}: all terminal within "
               f"{RECOVERY_TARGET_S:g} s of the restart, none duplicated", r["ok"] and r["in_flight"] >= 1000,
               f"{r['tasks']} tasks, {r['in_flight']} in flight at the kill, "
               + ("NOT all terminal" if r["done_s"] is None else f"all terminal {r['done_s']:.1f} s after restart")
               + f", {r['rerun']} re-run, {dup['results']}/{dup['deliveries']}/{dup['events']} duplicated "
               f"results/deliveries/events, {dup['poll events']} duplicated poll completions, "
               f"{r['polls_open']} polls not completed")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        stop_all()
        sys.exit(130)
