#!/usr/bin/env python
"""Held connections: Ricloud-Await holds and aschannel streams on the Procfile's web process
(run on demand only, never in the test suite).

    .venv/bin/python bench/held.py [--holds 100,1000] [--streams 100,1000] [--only holds,streams,consume,peer]
                                   [--probe-at 1000] [--consume-tasks 10000] [--peer-n 1000] [--skip-peers]

This project runs as the Procfile runs it (web: gunicorn with uvicorn workers, its default 2
processes, each with RICLOUD_WEB_THREADS=8 pool threads; worker: Celery, concurrency 4; no beat)
against its own Postgres database (name must contain "bench_held"; default ricloud_bench_held, created
and migrated when missing, its tables emptied at start) and Redis database 5 (flushed), with
DJANGO_DEBUG=0, rate limits off and RICLOUD_AWAIT_MAX_SECONDS raised (--await-max). Process
management, database/Redis setup and the Flower peer come from bench/load.py (imported, unchanged).
The client is one asyncio event loop (uvloop when installed; raw HTTP/1.1 on asyncio streams, no thread per connection;
RLIMIT_NOFILE raised to its hard limit, which the started processes inherit).

Phases (--only picks among them):
  holds    1. N concurrent `POST /polls` (one info task `account.info` on an active mocks.mock
              session) with `Ricloud-Await: 60`, for each N of --holds. The worker is paused
              (SIGSTOP of its process group) while the holds are made, so that all N are held at
              once; then resumed. Wake latency per hold = arrival of the response at the client
              (wall clock) - the poll's `date_completed` (Postgres); p50/p95/p99/max, how many
              answered, how many within 100 ms. Keys: ceil(N / 1000) organisations (the per-key
              cap RICLOUD_HELD_PER_KEY is 1000 per web process), or --hold-orgs. A client
              subscription to ricloud:poll:* splits the latency into the worker's side and the web's.
              At N=5000 the holds wait for the creation of all and the drain of the backlog: raise
              --await-seconds and --await-max (e.g. 170 and 200).
  streams  2. N concurrent aschannel streams (GET /stream/) spread over --stream-orgs organisations
              (one key each), opened --open-concurrency at a time: greeting time after the TCP
              connection (p50/p99/max), then the gaps between heartbeats over --heartbeat-window
              seconds per stream (greeting -> first heartbeat, and heartbeat -> heartbeat).
  (both)   3. While the N connections are held (at each N of --probe-at): `GET /tasks?limit=100`
              of another organisation (with --other-tasks tasks) from one keep-alive client for
              --probe-seconds (p50/p99), the same at c=--throughput-concurrency for
              --throughput-seconds (req/s), both also right before the connections are opened
              (none held) and after they are gone; Postgres connections of the web processes
              (pg_stat_activity by application_name, and by pid through /proc/<pid>/fd and
              /proc/net/tcp); the web's CPU with nothing but the held connections to serve.
           4. RSS of the gunicorn worker processes (VmRSS) before and while N are held, per
              connection, and over the second half alone. The web is restarted and warmed
              before each N (--no-fresh-web: not), so that memory freed earlier does not flatter it.
  holds    6. (this project's side) the holds' answers within --window s of the worker resuming,
              at N = --peer-n; and the issue's measure: N concurrent 2 s holds (--peer-hold-seconds)
              on work that does not run (worker paused): answered within --window s.
  consume  5. --consume-streams streams of one key; --consume-tasks v2 tasks (`POST /submit-task/`
              perform-2fa-challenge) submitted in bursts of --consume-burst at c=16; every reader
              records each task_id it receives and posts /results-consumed/ (task_ids comma-joined)
              for what it got. Checked in Postgres at the end: every task succeeded, every delivery
              consumed, every task results_consumed; skipped deliveries (never received by any
              connection), duplicates per connection, lost consumptions, deliveries received by
              several connections (legitimate; counted apart). Deliveries left unreceived after
              the grace get one fresh notification on the stream's channel: if they then arrive,
              it was a lost wake-up.
  peer     6. Flower 2.2 (bench/load.py's peer: a Celery app with a no-op task, its worker at
              concurrency 4, Flower on the same Redis server, database 6): N tasks via async-apply
              while its worker is paused, N concurrent `GET /api/task/result/<id>?timeout=60`,
              the worker resumed: answered within --window s, and the wake latency (answer - the
              result's date_done); and N concurrent `?timeout=2`
              long-polls on work that does not run: answered within --window s. Ratios this
              project / Flower.

Prints the figures, a summary table and PASS/FAIL against the targets (report only; exit 0 unless
the benchmark itself broke). Every process is in a process group of its own, stopped on exit,
error or Ctrl-C (a paused group is continued first).
"""
import argparse
import asyncio
import collections
import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))

import load  # noqa: E402 - bench/load.py: processes, Postgres/Redis setup, the Flower peer
from load import Client, fmt, group_pids, percentile, ratio, run_load  # noqa: E402

DEFAULT_DATABASE_URL = "postgres://root@127.0.0.1:5432/ricloud_bench_held"
HOST = "127.0.0.1"
WEB_APP = "ricloud-bench-held-web"  # application_name of the web processes' Postgres connections
WORKER_APP = "ricloud-bench-held-worker"
POOL_THREADS = 8  # RICLOUD_WEB_THREADS' default: the sync pool of each web process
HELD_PER_KEY = 1000  # RICLOUD_HELD_PER_KEY's default, per key and web process
HEARTBEAT_S = 5.0  # RICLOUD_ASCHANNEL_HEARTBEAT_SECONDS' default
PHASES = ("holds", "streams", "consume", "peer")
# Left out of the processes' environment: the run uses the settings' defaults for these.
DEFAULTED = ("RICLOUD_HELD_PER_KEY", "RICLOUD_ASCHANNEL_HEARTBEAT_SECONDS", "RICLOUD_WEB_THREADS", "WEB_THREADS",
             "RICLOUD_AWAIT_MAX_SECONDS", "DATABASE_CONN_MAX_AGE")
now = time.monotonic

# --- processes ----------------------------------------------------------------------------------

PAUSED: set[int] = set()


def pause(proc):
    os.killpg(proc.pid, signal.SIGSTOP)
    PAUSED.add(proc.pid)


def resume(proc):
    os.killpg(proc.pid, signal.SIGCONT)
    PAUSED.discard(proc.pid)


def resume_all():
    for pgid in list(PAUSED):
        try:
            os.killpg(pgid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        PAUSED.discard(pgid)


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def with_app(url: str, name: str) -> str:
    return url + ("&" if "?" in url else "?") + f"application_name={name}"


def rss_kb(pid) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tcp_table() -> dict:
    """inode -> (local port, remote port, state) of every IPv4/IPv6 TCP socket."""
    table = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    local, remote, state, inode = parts[1], parts[2], parts[3], int(parts[9])
                    table[inode] = (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16), state)
        except OSError:
            pass
    return table


def socket_inodes(pid) -> set:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    except OSError:
        pass
    return inodes


# --- a raw asyncio HTTP/1.1 client -----------------------------------------------------------------


def request_bytes(method, path, headers=None, body=b"") -> bytes:
    head = {"Host": "bench", "Content-Length": str(len(body)), **(headers or {})}
    return (f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items())
            + "\r\n").encode("latin1") + body


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            data = await reader.readexactly(size + 2)
            if not size:
                break
            parts.append(data[:-2])
        body = b"".join(parts)
    else:
        body = await reader.read()
    return status, headers, body


async def one_shot(port, method, path, headers=None, body=b"", sem=None, timeout=300.0, progress=None) -> dict:
    """One request on its own connection (`Connection: close`). `sem` is held while connecting and
    sending only. Returns times (monotonic), the wall-clock arrival and the answer."""
    rec = {"status": None, "error": None}
    writer = None
    try:
        async with sem or _nullsem():
            rec["t0"] = now()
            reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 30)
            rec["t_connected"] = now()
            writer.write(request_bytes(method, path, {"Connection": "close", **(headers or {})}, body))
            await writer.drain()
        rec["t_sent"] = now()
        if progress is not None:
            progress["sent"] += 1
        status, _, content = await asyncio.wait_for(read_response(reader), timeout)
        rec["t_answer"], rec["wall"] = now(), time.time()
        rec["status"], rec["body"] = status, content
    except asyncio.CancelledError:
        rec["error"] = "cancelled"
        raise
    except Exception as exc:  # noqa: BLE001 - counted and shown
        rec["error"] = repr(exc)
    finally:
        if writer is not None:
            writer.close()
    return rec


class _nullsem:
    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return False


class AsyncClient:
    """One keep-alive connection; reconnects once when the server had closed it."""

    def __init__(self, port, headers):
        self.port, self.headers = port, headers
        self.reader = self.writer = None

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, method, path, body=b"", headers=None):
        for attempt in (0, 1):
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
            try:
                self.writer.write(request_bytes(method, path, {**self.headers, **(headers or {})}, body))
                await self.writer.drain()
                status, head, content = await asyncio.wait_for(read_response(self.reader), 60)
            except (ConnectionError, asyncio.IncompleteReadError, OSError):
                self.close()
                if attempt:
                    raise
                continue
            if head.get("connection", "").lower() == "close":
                self.close()
            return status, content
        raise AssertionError("unreachable")


class StreamConn:
    """An aschannel stream read as ricloud-py 2.x reads it (length-prefixed header and payload
    frames, a bare CRLF for a heartbeat; HTTP/1.1 chunking stripped). Each frame carries the
    monotonic time of the read that completed it."""

    def __init__(self, port, token, stream):
        self.port, self.token, self.stream = port, token, stream
        self.status = self.error = self.writer = None
        self.buffer = self.raw = b""
        self.t_read = None

    async def open(self, timeout=30.0):
        self.t0 = now()
        self.reader, self.writer = await asyncio.wait_for(asyncio.open_connection(HOST, self.port), timeout)
        self.t_connected = now()
        self.writer.write(request_bytes("GET", f"/stream/?stream={self.stream}",
                                        {"Authorization": f"Token {self.token}"}))
        await self.writer.drain()
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        self.status = int(head.split(b" ", 2)[1])
        self.chunked = b"transfer-encoding: chunked" in head.lower()

    async def _fill(self, timeout):
        data = await asyncio.wait_for(self.reader.read(65536), timeout)
        self.t_read = now()
        if not data:
            raise EOFError("stream ended")
        if not self.chunked:
            self.buffer += data
            return
        self.raw += data
        while True:
            size_line, sep, rest = self.raw.partition(b"\r\n")
            if not sep:
                return
            size = int(size_line.split(b";")[0], 16)
            if len(rest) < size + 2:
                return
            self.buffer += rest[:size]
            self.raw = rest[size + 2:]
            if not size:
                raise EOFError("stream ended")

    async def _line(self, timeout):
        while b"\r\n" not in self.buffer:
            await self._fill(timeout)
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    async def _exact(self, n, timeout):
        while len(self.buffer) < n:
            await self._fill(timeout)
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    async def next(self, timeout=30.0):
        """('heartbeat', None, None, t) or ('message', header, payload, t)."""
        line = await self._line(timeout)
        if not line.strip():
            return "heartbeat", None, None, self.t_read
        header = json.loads((await self._exact(int(line), timeout))[:-2])
        length = int(await self._line(timeout))
        payload = (await self._exact(length, timeout))[:-2]
        return "message", header, payload, self.t_read

    def close(self):
        if self.writer is not None:
            self.writer.close()


# --- this project --------------------------------------------------------------------------------

ORGS_SNIPPET = """
import json, sys
import django
django.setup()
from tasks_app.services.organisations import create_organisation
for name in sys.argv[1:]:
    organisation, key = create_organisation(name=name)
    print(json.dumps({"name": name, "organisation": organisation.id, "key": key.id,
                      "token": key.plaintext_token, "stream": key.stream}))
"""


class Project(load.Ours):
    """bench/load.py's `Ours` (database, Redis, organisation, session, v2 account), started without
    beat, with the web's and the worker's Postgres connections named, and across several
    organisations."""

    def __init__(self, args, logdir):
        super().__init__(args, logdir)
        for name in DEFAULTED:
            self.env.pop(name, None)
        self.env["RICLOUD_AWAIT_MAX_SECONDS"] = str(args.await_max)
        self.pg_port = int(self.dsn.get("port") or 5432)

    def start(self, with_beat=False):
        lines = load.procfile()
        self.port = load.free_port()
        self.proc_env = {**self.env, "PORT": str(self.port)}
        url = self.args.database_url
        self.web = load.start("web", lines["web"], {**self.proc_env, "DATABASE_URL": with_app(url, WEB_APP)},
                              self.logdir)
        self.worker = load.start("worker", lines["worker"],
                                 {**self.proc_env, "DATABASE_URL": with_app(url, WORKER_APP)}, self.logdir)
        self.worker_log = self.logdir / "worker.log"
        self.beat = None
        self.regroup()
        self.base = f"http://127.0.0.1:{self.port}"
        self.headers = {"Authorization": f"Token {self.token}"}
        print(f"web:    {lines['web']}  (PORT={self.port}, RICLOUD_AWAIT_MAX_SECONDS={self.args.await_max:g})")
        print(f"worker: {lines['worker']}")
        print("beat:   not started")
        t0 = time.perf_counter()
        load.wait_http("/organisation", self.client(), self.groups)
        self.wait_worker_ready()
        print(f"ready in {time.perf_counter() - t0:.1f} s")
        with self.conn.cursor() as cur:
            cur.execute("SELECT id FROM tasks_app_key WHERE organisation_id = %s", (self.organisation,))
            key_id = cur.fetchone()[0]
        self.main = {"name": "main", "organisation": self.organisation, "key": key_id, "token": self.token,
                     "stream": f"stream-{key_id}"}
        self.main["session"] = self.open_session(self.main)
        self.session = self.main["session"]
        c = self.client()
        status, data = c.request("POST", "/register-account/",
                                 urlencode({"service": "icloud", "username": load.V2_ACCOUNT}), self.V2_HEADERS)
        if status != 200:
            raise RuntimeError(f"register-account -> {status} {data[:200]!r}")
        c.close()

    def restart_web(self):
        """A fresh web (same command, environment and port): RSS is then measured without the
        memory the earlier phases left in the processes' allocators."""
        env = {**self.proc_env, "DATABASE_URL": with_app(self.args.database_url, WEB_APP)}
        load.stop(self.web)
        self.web = load.start("web", load.procfile()["web"], env, self.logdir)
        self.regroup()
        load.wait_http("/organisation", self.client(), self.groups)

    async def warm(self, orgs):
        """Every path the phases take, on both web processes: list, create with a hold, stream."""
        await asyncio.to_thread(probe_throughput, self.base, self.other["token"], 8, 1.0)
        org = orgs[0]
        sem = asyncio.Semaphore(20)
        body = json.dumps({"session": self.session, "payload": load.V3_INFO_POLL}).encode()
        headers = {"Authorization": f"Token {self.token}", "Content-Type": "application/json", "Ricloud-Await": "10"}
        holds = [one_shot(self.port, "POST", "/polls", headers, body, sem, 30) for _ in range(20)]
        streams = [StreamConn(self.port, org["token"], org["stream"]) for _ in range(20)]

        async def greet(conn):
            try:
                await conn.open()
                await conn.next(10)
            finally:
                conn.close()

        await asyncio.gather(*holds, *(greet(c) for c in streams), return_exceptions=True)
        await asyncio.to_thread(self.drain, self.args.drain_timeout)

    def unfinished(self) -> int:  # every organisation of the run (load.Ours counts its own only)
        with self.conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM tasks_app_task WHERE state NOT IN %s", (load.TERMINAL,))
            return cur.fetchone()[0]

    def create_orgs(self, names) -> list[dict]:
        if not names:
            return []
        out = subprocess.run([self.python, "-c", ORGS_SNIPPET, *names], cwd=load.ROOT, env=self.env, check=True,
                             capture_output=True, text=True).stdout
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def org_client(self, org) -> Client:
        return Client(self.base, {"Authorization": f"Token {org['token']}"})

    def open_session(self, org) -> str:
        c = self.org_client(org)
        user = c.json("POST", "/users", {"identifier": f"bench-held-{org['name']}"})["id"]
        session = c.json("POST", "/sessions", {"source": {"user": user, "type": "mocks.mock",
                                                           "identifier": "john.appleseed@reincubate.com"},
                                                "payload": {"password": "joshua"}}, {"Ricloud-Await": "10"})
        c.close()
        if session["state"] != "active":
            raise RuntimeError(f"session of {org['name']} not active: {session}")
        return session["id"]

    def pg_now(self):
        with self.conn.cursor() as cur:
            cur.execute("SELECT now()")
            return cur.fetchone()[0]

    def polls_since(self, since) -> int:
        with self.conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM tasks_app_poll WHERE date_created >= %s", (since,))
            return cur.fetchone()[0]

    # the web processes
    def web_workers(self) -> list[int]:
        return sorted(pid for pid in group_pids(self.web.pid) if pid != self.web.pid)

    def web_rss_kb(self) -> int:
        return sum(rss_kb(pid) for pid in self.web_workers())

    def web_sockets(self) -> dict:
        """Per gunicorn worker pid: established client connections on the web port, and its TCP
        connections to Postgres (by local port, to match pg_stat_activity.client_port)."""
        table = tcp_table()
        out = {}
        for pid in self.web_workers():
            clients, pg_ports = 0, set()
            for inode in socket_inodes(pid):
                entry = table.get(inode)
                if not entry:
                    continue
                local, remote, state = entry
                if local == self.port and state == "01":
                    clients += 1
                elif remote == self.pg_port:
                    pg_ports.add(local)
            out[pid] = {"clients": clients, "pg_ports": pg_ports}
        return out

    def web_pg(self) -> dict:
        """Postgres connections of the web processes: by application_name (total and by state) and
        per worker pid (matching client_port with the pid's sockets)."""
        with self.conn.cursor() as cur:
            cur.execute("SELECT client_port, state FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
                        (self.dbname, WEB_APP))
            rows = cur.fetchall()
        sockets = self.web_sockets()
        per_pid = {pid: sum(1 for port, _ in rows if port in s["pg_ports"]) for pid, s in sockets.items()}
        return {"total": len(rows), "states": collections.Counter(state for _, state in rows), "per_pid": per_pid}


class PgSampler(threading.Thread):
    """Samples the web processes' Postgres connections every 0.25 s while running; keeps the max."""

    def __init__(self, project):
        super().__init__(daemon=True)
        self.project = project
        self.stopped = threading.Event()
        self.max_total, self.max_per_pid, self.samples, self.last = 0, 0, 0, None
        self.conn = project.connect()

    def sample(self):
        orig = self.project.conn
        self.project.conn = self.conn  # this thread's own connection
        try:
            return self.project.web_pg()
        finally:
            self.project.conn = orig

    def run(self):
        while not self.stopped.is_set():
            pg = self.sample()
            self.samples += 1
            self.last = pg
            self.max_total = max(self.max_total, pg["total"])
            self.max_per_pid = max([self.max_per_pid, *pg["per_pid"].values()])
            self.stopped.wait(0.25)

    def finish(self):
        self.stopped.set()
        self.join()
        self.conn.close()


# --- the meanwhile probes (3): GET /tasks of another organisation ---------------------------------


def probe_sequential(base, token, seconds) -> dict:
    client = Client(base, {"Authorization": f"Token {token}"})
    for _ in range(3):  # warm
        client.request("GET", "/tasks?limit=100")
    lat, errors, items = [], 0, None
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        status, data = client.request("GET", "/tasks?limit=100")
        t1 = time.perf_counter()
        if status != 200:
            errors += 1
            continue
        if items is None:
            items = len(json.loads(data)["data"])
        lat.append(t1 - t0)
    client.close()
    lat.sort()
    return {"n": len(lat), "errors": errors, "items": items, "p50": percentile(lat, 50) * 1000,
            "p99": percentile(lat, 99) * 1000, "max": lat[-1] * 1000 if lat else float("nan")}


def probe_throughput(base, token, concurrency, seconds, groups=None) -> dict:
    headers = {"Authorization": f"Token {token}"}

    def do(client):
        status, _ = client.request("GET", "/tasks?limit=100")
        return status == 200, None

    out = run_load(lambda: Client(base, headers), do, concurrency, seconds, 1.0, groups)
    lat = out["lat"]
    web = load.cpu_delta(out["cpu"]["measure"], out["cpu"]["end"]).get("web") if groups else None
    return {"rps": len(lat) / out["elapsed"], "p50": percentile(lat, 50) * 1000, "p99": percentile(lat, 99) * 1000,
            "errors": out["errors"], "cpu_ms": web * 1000 / len(lat) if web is not None and lat else None}


def run_probes(project, token, args, label) -> dict:
    sampler = PgSampler(project)
    sampler.start()
    try:
        seq = probe_sequential(project.base, token, args.probe_seconds)
        thr = probe_throughput(project.base, token, args.throughput_concurrency, args.throughput_seconds,
                               project.groups)
    finally:
        sampler.finish()
    r = {"seq": seq, "thr": thr, "pg_max": sampler.max_total, "pg_max_per_pid": sampler.max_per_pid,
         "pg_last": sampler.last, "pg_samples": sampler.samples}
    print(f"  [{label}] GET /tasks?limit=100 (other organisation, {seq['items']} items) sequential "
          f"{args.probe_seconds:g} s: {seq['n']} requests, p50 {fmt(seq['p50'])} ms, p99 {fmt(seq['p99'])} ms, "
          f"max {fmt(seq['max'])} ms, {seq['errors']} errors; c={args.throughput_concurrency} for "
          f"{args.throughput_seconds:g} s: {fmt(thr['rps'])} req/s (p50 {fmt(thr['p50'])} ms, p99 {fmt(thr['p99'])} ms, "
          f"{thr['errors']} errors; web CPU {fmt(thr['cpu_ms'], ' ms', 2)} per request)")
    last = sampler.last or {"total": 0, "states": {}, "per_pid": {}}
    print(f"  [{label}] web Postgres connections: max {sampler.max_total} in all, max {sampler.max_per_pid} per "
          f"process over {sampler.samples} samples (last: {last['total']}, "
          f"{dict(last['states'])}, per pid {last['per_pid']}); pool {POOL_THREADS} threads per process")
    return r


async def idle_cpu(project, seconds=5.0) -> float:
    """CPU of the web processes while nothing but the held connections is there: ms per second."""
    t0, c0 = now(), project.groups.cpu()["web"]
    await asyncio.sleep(seconds)
    return (project.groups.cpu()["web"] - c0) * 1000 / (now() - t0)


# --- phase 1: Ricloud-Await holds ------------------------------------------------------------------


async def holds_phase(project, n, orgs, args, probe: bool) -> dict:
    ok, _ = await asyncio.to_thread(project.drain, args.drain_timeout)
    if not ok:
        raise RuntimeError("backlog not drained before the holds")
    k = max(1, math.ceil(n / HELD_PER_KEY)) if not args.hold_orgs else args.hold_orgs
    k = min(k, len(orgs))
    used = orgs[:k]
    r = {"n": n, "orgs": k}
    if args.fresh_web:
        await asyncio.to_thread(project.restart_web)
        await project.warm(orgs)
    if probe:
        r["none"] = await asyncio.to_thread(run_probes, project, project.other["token"], args, "none held")
    r["idle0"] = await idle_cpu(project)
    rss0 = project.web_rss_kb()
    since = await asyncio.to_thread(project.pg_now)
    # The commit's announcement (what the web's hub wakes on), as seen by a client subscription:
    # splits the wake latency into the worker's side (date_completed -> notice) and the web's.
    import redis.asyncio

    notices = {}
    listener = redis.asyncio.Redis.from_url(project.broker)
    pubsub = listener.pubsub(ignore_subscribe_messages=True)
    await pubsub.psubscribe("ricloud:poll:*")

    async def listen():
        async for message in pubsub.listen():
            if message["type"] == "pmessage":
                notices.setdefault(message["channel"].decode().rsplit(":", 1)[1], time.time())

    listening = asyncio.ensure_future(listen())
    pause(project.worker)
    sem = asyncio.Semaphore(args.open_concurrency or 10**6)
    t0 = now()
    jobs = []
    for i in range(n):
        org = used[i % k]
        body = json.dumps({"session": org["session"], "payload": load.V3_INFO_POLL}).encode()
        headers = {"Authorization": f"Token {org['token']}", "Content-Type": "application/json",
                   "Ricloud-Await": f"{args.await_seconds:g}"}
        jobs.append(asyncio.ensure_future(one_shot(project.port, "POST", "/polls", headers, body, sem,
                                                   timeout=args.await_seconds + args.await_max + 60)))
    created, rss_half = 0, None
    deadline = now() + 60 + n / 20
    while now() < deadline:
        created = await asyncio.to_thread(project.polls_since, since)
        if rss_half is None and created >= n // 2:
            rss_half, half = project.web_rss_kb(), created
        failed = sum(1 for j in jobs if j.done() and j.result()["status"] != 201)
        if created + failed >= n:  # errors (no poll) are counted below
            break
        await asyncio.sleep(0.2)
    r["create_s"] = now() - t0
    await asyncio.sleep(1.0)  # the last markers reach the event loop
    r["early"] = sum(1 for j in jobs if j.done())
    sockets = project.web_sockets()
    r["held_per_process"] = [s["clients"] for s in sockets.values()]
    r["rss0"], r["rss1"] = rss0, project.web_rss_kb()
    r["pg_held"] = await asyncio.to_thread(project.web_pg)
    r["idle1"] = await idle_cpu(project)
    print(f"  holds N={n} ({k} key{'s' if k > 1 else ''}, {k} organisation{'s' if k > 1 else ''}): {created} polls "
          f"created in {r['create_s']:.1f} s with the worker paused; client connections per web process "
          f"{r['held_per_process']}; answered before the work ran: {r['early']}; web Postgres connections "
          f"{r['pg_held']['total']} (per pid {r['pg_held']['per_pid']}); web CPU with nothing else to do: "
          f"{r['idle1']:.1f} ms/s while held, {r['idle0']:.1f} ms/s before")
    if probe:
        r["held"] = await asyncio.to_thread(run_probes, project, project.other["token"], args, f"{n} holds")
    cpu0 = project.groups.cpu()
    resume(project.worker)
    t_resume = now()
    recs = await asyncio.gather(*jobs)
    cpu = load.cpu_delta(cpu0, project.groups.cpu())
    await asyncio.sleep(0.1)
    listening.cancel()
    await asyncio.gather(listening, return_exceptions=True)
    await pubsub.aclose()
    await listener.aclose()
    r["all_s"] = max((x["t_answer"] for x in recs if x.get("t_answer")), default=t_resume) - t_resume
    polls = {}
    statuses = collections.Counter()
    errors = [x["error"] for x in recs if x["error"]]
    for x in recs:
        statuses[x["status"]] += 1
        if x["status"] == 201:
            body = json.loads(x["body"])
            polls[body["id"]] = (x, body["state"])
    with project.conn.cursor() as cur:
        cur.execute("SELECT id::text, state, extract(epoch FROM date_completed) FROM tasks_app_poll"
                    " WHERE id = ANY(%s::uuid[])", (list(polls),))
        done = {pid: (state, float(epoch) if epoch is not None else None) for pid, state, epoch in cur.fetchall()}
    lat, unsettled, in_window, web_side, worker_side = [], 0, 0, [], []
    for pid, (x, state) in polls.items():
        db_state, completed = done.get(pid, (None, None))
        if state != "completed" or completed is None:
            unsettled += 1
            continue
        lat.append(x["wall"] - completed)
        if pid in notices:
            web_side.append(x["wall"] - notices[pid])
            worker_side.append(notices[pid] - completed)
        if x["t_answer"] - t_resume <= args.window:
            in_window += 1
    lat.sort()
    web_side.sort()
    worker_side.sort()
    r["web_side"] = [percentile(web_side, q) * 1000 for q in (50, 99, 100)]
    r["worker_side"] = [percentile(worker_side, q) * 1000 for q in (50, 99, 100)]
    r.update({"answered": len(polls), "statuses": dict(statuses), "errors": errors, "unsettled": unsettled,
              "lat": lat, "in_window": in_window, "within_100": sum(1 for v in lat if v <= 0.1),
              "p50": percentile(lat, 50) * 1000, "p95": percentile(lat, 95) * 1000,
              "p99": percentile(lat, 99) * 1000, "max": lat[-1] * 1000 if lat else float("nan"),
              "min": lat[0] * 1000 if lat else float("nan")})
    r["ok"] = (len(polls) == n and not unsettled and not r["early"] and r["within_100"] == n)
    r["cpu_ms"] = {name: value * 1000 / n for name, value in cpu.items()}
    if probe:  # the baseline again, once the work has drained: the machine's drift shows
        await asyncio.to_thread(project.drain, args.drain_timeout)
        r["none_after"] = await asyncio.to_thread(run_probes, project, project.other["token"], args,
                                                  "none held, after")
    per = (r["rss1"] - r["rss0"]) / n
    r["rss_per_conn_kb"] = per
    # The second half alone: memory the allocator kept from earlier requests is used up first.
    r["rss_marginal_kb"] = (r["rss1"] - rss_half) / (n - half) if rss_half is not None and n > half else None
    print(f"  holds N={n}: answered {len(polls)}/{n} (statuses {dict(statuses)}"
          f"{', errors: ' + '; '.join(sorted(set(errors))[:3]) if errors else ''}), {unsettled} answered before "
          f"their poll completed; all answered {r['all_s']:.1f} s after the worker resumed, {in_window} within "
          f"{args.window:g} s")
    print(f"  holds N={n}: wake latency (response at the client - poll date_completed): p50 {fmt(r['p50'])} ms, "
          f"p95 {fmt(r['p95'])} ms, p99 {fmt(r['p99'])} ms, max {fmt(r['max'])} ms (min {fmt(r['min'])} ms); "
          f"within 100 ms: {r['within_100']}/{n}")
    print(f"  holds N={n}: of which date_completed -> the commit's notice on Redis (worker side) p50/p99/max "
          f"{'/'.join(fmt(v) for v in r['worker_side'])} ms; notice -> response at the client (web side) "
          f"{'/'.join(fmt(v) for v in r['web_side'])} ms ({len(web_side)} notices seen); CPU from the resume to the "
          f"last answer per hold: web {r['cpu_ms']['web']:.2f} ms, worker {r['cpu_ms']['worker']:.2f} ms")
    print(f"  holds N={n}: web RSS (sum of {len(project.web_workers())} workers) {r['rss0'] / 1024:.1f} MiB before, "
          f"{r['rss1'] / 1024:.1f} MiB while held: {per:.1f} KiB per hold, {fmt(r['rss_marginal_kb'], ' KiB')} per hold "
          f"of the second half (both include creating the polls)")
    return r


async def short_holds_phase(project, n, orgs, args) -> dict:
    """The issue's measure: N concurrent holds of --peer-hold-seconds on work that does not run
    (worker paused): how many are answered within --window s of the first request."""
    ok, _ = await asyncio.to_thread(project.drain, args.drain_timeout)
    k = min(len(orgs), max(1, math.ceil(n / HELD_PER_KEY)) if not args.hold_orgs else args.hold_orgs)
    pause(project.worker)
    sem = asyncio.Semaphore(args.open_concurrency or 10**6)
    t0 = now()
    jobs = []
    for i in range(n):
        org = orgs[i % k]
        body = json.dumps({"session": org["session"], "payload": load.V3_INFO_POLL}).encode()
        headers = {"Authorization": f"Token {org['token']}", "Content-Type": "application/json",
                   "Ricloud-Await": f"{args.peer_hold_seconds:g}"}
        jobs.append(asyncio.ensure_future(one_shot(project.port, "POST", "/polls", headers, body, sem, timeout=120)))
    recs = await asyncio.gather(*jobs)
    resume(project.worker)
    answered = [x for x in recs if x["status"] == 201]
    times = sorted(x["t_answer"] - t0 for x in answered)
    r = {"n": n, "answered": len(answered), "in_window": sum(1 for t in times if t <= args.window),
         "all_s": times[-1] if times else float("nan"), "statuses": dict(collections.Counter(x["status"] for x in recs)),
         "pending": sum(1 for x in answered if json.loads(x["body"])["state"] != "completed")}
    print(f"  {n} concurrent holds of {args.peer_hold_seconds:g} s on work that does not run (worker paused): "
          f"{r['in_window']} answered within {args.window:g} s, all {r['answered']} after {r['all_s']:.1f} s "
          f"(statuses {r['statuses']}, {r['pending']} answered with the poll still pending, as they should)")
    await asyncio.to_thread(project.drain, args.drain_timeout)
    return r


# --- phase 2: aschannel streams --------------------------------------------------------------------


class Holder:
    """One held stream: opened under `sem`, then read until stopped; every frame's time is kept."""

    def __init__(self, port, org):
        self.conn = StreamConn(port, org["token"], org["stream"])
        self.frames = []  # (kind, t)
        self.t_greet = self.error = None

    async def run(self, sem, stop: asyncio.Event):
        c = self.conn
        try:
            async with sem:
                await c.open()
                if c.status != 200:
                    self.error = f"HTTP {c.status}"
                    return
                kind, header, payload, t = await c.next(30)
                if kind != "message" or header.get("type") != "system":
                    self.error = f"no greeting: {kind} {header}"
                    return
                self.t_greet = t
            while not stop.is_set():
                kind, header, _, t = await c.next(HEARTBEAT_S * 4)
                self.frames.append((kind if kind == "heartbeat" else header.get("type"), t))
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # noqa: BLE001 - counted and shown
            if not stop.is_set():
                self.error = repr(exc)
        finally:
            c.close()

    def gaps(self, until):
        """(greeting -> first heartbeat, [heartbeat -> heartbeat ...]) among frames up to `until`."""
        beats = [t for kind, t in self.frames if kind == "heartbeat" and t <= until]
        if not beats:
            return None, []
        return beats[0] - self.t_greet, [b - a for a, b in zip(beats, beats[1:], strict=False)]


async def streams_phase(project, n, orgs, args, probe: bool) -> dict:
    s = min(len(orgs), args.stream_orgs)
    used = orgs[:s]
    r = {"n": n, "orgs": s}
    if args.fresh_web:
        await asyncio.to_thread(project.restart_web)
        await project.warm(used)
    if probe:
        r["none"] = await asyncio.to_thread(run_probes, project, project.other["token"], args, "none held")
    r["idle0"] = await idle_cpu(project)
    rss0 = project.web_rss_kb()
    sem = asyncio.Semaphore(args.open_concurrency or 10**6)
    stop = asyncio.Event()
    holders = [Holder(project.port, used[i % s]) for i in range(n)]
    cpu0 = project.groups.cpu()
    jobs = [asyncio.ensure_future(h.run(sem, stop)) for h in holders]
    t0 = now()
    deadline = t0 + 60 + n / 50
    rss_half = None
    while now() < deadline and not all(h.t_greet is not None or h.error or j.done() for h, j in zip(holders, jobs,
                                                                                                       strict=True)):
        if rss_half is None:
            greeted_now = sum(1 for h in holders if h.t_greet is not None)
            if greeted_now >= n // 2:
                rss_half, half = project.web_rss_kb(), greeted_now
        await asyncio.sleep(0.1)
    r["open_s"] = now() - t0
    r["open_web_cpu_ms"] = load.cpu_delta(cpu0, project.groups.cpu())["web"] * 1000 / n
    greeted = [h for h in holders if h.t_greet is not None]
    greet = sorted(h.t_greet - h.conn.t_connected for h in greeted)
    connect = sorted(h.conn.t_connected - h.conn.t0 for h in greeted)
    errors = collections.Counter(h.error for h in holders if h.error)
    r.update({"greeted": len(greeted), "errors": dict(errors), "g50": percentile(greet, 50) * 1000,
              "g99": percentile(greet, 99) * 1000, "gmax": greet[-1] * 1000 if greet else float("nan"),
              "c50": percentile(connect, 50) * 1000, "cmax": connect[-1] * 1000 if connect else float("nan")})
    print(f"  streams N={n} ({s} organisations, one key each, {math.ceil(n / s)} streams per key; opened "
          f"{args.open_concurrency or 'all'} at a time): {len(greeted)}/{n} greeted in {r['open_s']:.1f} s "
          f"({len(greeted) / r['open_s']:.0f}/s; web CPU {r['open_web_cpu_ms']:.1f} ms per stream opened)"
          f"{', errors: ' + str(dict(errors)) if errors else ''}; greeting after connect p50 {fmt(r['g50'])} ms, "
          f"p99 {fmt(r['g99'])} ms, max {fmt(r['gmax'])} ms (TCP connect p50 {fmt(r['c50'])} ms, max "
          f"{fmt(r['cmax'])} ms)")
    # heartbeats: --heartbeat-window seconds after each stream's greeting
    last_greet = max((h.t_greet for h in greeted), default=now())
    await asyncio.sleep(max(0.0, last_greet + args.heartbeat_window + 0.5 - now()))
    firsts, betweens, short = [], [], 0
    for h in greeted:
        first, between = h.gaps(h.t_greet + args.heartbeat_window)
        if first is not None:
            firsts.append(first)
        betweens.extend(between)
        if len(between) + (first is not None) < int(args.heartbeat_window // HEARTBEAT_S):
            short += 1
    firsts.sort()
    betweens.sort()
    alive = sum(1 for h in greeted if not h.error)
    r.update({"first": firsts, "between": betweens, "short": short, "alive": alive})
    print(f"  streams N={n}: heartbeats over {args.heartbeat_window:g} s per stream: greeting -> first heartbeat "
          f"min {fmt(firsts[0] if firsts else None, ' s', 2)}, p50 {fmt(percentile(firsts, 50), ' s', 2)}, "
          f"max {fmt(firsts[-1] if firsts else None, ' s', 2)}; between heartbeats ({len(betweens)} gaps) min "
          f"{fmt(betweens[0] if betweens else None, ' s', 2)}, p50 {fmt(percentile(betweens, 50), ' s', 2)}, "
          f"max {fmt(betweens[-1] if betweens else None, ' s', 2)}; streams with fewer than "
          f"{int(args.heartbeat_window // HEARTBEAT_S)} heartbeats in the window: {short}; streams still open: {alive}")
    sockets = project.web_sockets()
    r["held_per_process"] = [x["clients"] for x in sockets.values()]
    r["rss0"], r["rss1"] = rss0, project.web_rss_kb()
    r["pg_held"] = await asyncio.to_thread(project.web_pg)
    r["rss_per_conn_kb"] = (r["rss1"] - r["rss0"]) / n
    r["rss_marginal_kb"] = (r["rss1"] - rss_half) / (n - half) if rss_half is not None and n > half else None
    r["idle1"] = await idle_cpu(project)
    print(f"  streams N={n}: client connections per web process {r['held_per_process']}; web Postgres connections "
          f"{r['pg_held']['total']} (per pid {r['pg_held']['per_pid']}); web RSS {r['rss0'] / 1024:.1f} MiB before, "
          f"{r['rss1'] / 1024:.1f} MiB while held: {r['rss_per_conn_kb']:.1f} KiB per stream, "
          f"{fmt(r['rss_marginal_kb'], ' KiB')} per stream of the second half; web CPU with nothing "
          f"else to do: {r['idle1']:.1f} ms/s while held (heartbeats), {r['idle0']:.1f} ms/s before")
    if probe:
        r["held"] = await asyncio.to_thread(run_probes, project, project.other["token"], args, f"{n} streams")
    # heartbeats over the whole hold (probes included), for information
    t_end = now()
    whole = sorted(g for h in greeted for g in h.gaps(t_end)[1])
    r["whole"] = whole
    if probe:
        print(f"  streams N={n}: between heartbeats over the whole hold ({t_end - last_greet:.0f} s, probes "
              f"included): min {fmt(whole[0] if whole else None, ' s', 2)}, max "
              f"{fmt(whole[-1] if whole else None, ' s', 2)}; streams ended early: "
              f"{sum(1 for h in greeted if h.error)}")
    stop.set()
    for j in jobs:
        j.cancel()
    await asyncio.gather(*jobs, return_exceptions=True)
    if probe:
        r["none_after"] = await asyncio.to_thread(run_probes, project, project.other["token"], args,
                                                  "none held, after")
    r["ok_greet"] = len(greeted) == n and r["gmax"] <= 1000
    lo, hi = HEARTBEAT_S - 1, HEARTBEAT_S + 1
    r["ok_beats"] = ((bool(betweens) or args.heartbeat_window < 2 * HEARTBEAT_S) and bool(firsts) and all(lo <= g <= hi for g in firsts + betweens) and not short
                     and alive == n)
    return r


# --- phase 5: deliveries and consumptions ----------------------------------------------------------


class Consumer:
    def __init__(self, index, port, org):
        self.index = index
        self.conn = StreamConn(port, org["token"], org["stream"])
        self.client = AsyncClient(port, {"Authorization": f"Token {org['token']}"})
        self.received = collections.Counter()
        self.queue = []
        self.consumed_ok = set()
        self.post_statuses = collections.Counter()
        self.post_errors = []
        self.error = None

    async def read(self, stop: asyncio.Event):
        try:
            await self.conn.open()
            if self.conn.status != 200:
                raise RuntimeError(f"stream HTTP {self.conn.status}")
            while not stop.is_set():
                kind, header, _, _ = await self.conn.next(HEARTBEAT_S * 4)
                if kind != "message" or header.get("type") == "system":
                    continue
                if "chunk" in header and header["chunk"] != header.get("total_chunks"):
                    continue
                task_id = header["task_id"]
                self.received[task_id] += 1
                if self.received[task_id] == 1:
                    self.queue.append(task_id)
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # noqa: BLE001 - shown
            if not stop.is_set():
                self.error = repr(exc)
        finally:
            self.conn.close()

    async def post(self, stop: asyncio.Event, interval=0.2):
        """POST /results-consumed/ for what was received, every `interval` s; flushes after `stop`."""
        while True:
            if self.queue:
                ids, self.queue = self.queue[:5000], self.queue[5000:]
                try:
                    status, _ = await self.client.request(
                        "POST", "/results-consumed/", urlencode({"task_ids": ",".join(ids)}).encode(),
                        {"Content-Type": "application/x-www-form-urlencoded"})
                except Exception as exc:  # noqa: BLE001 - retried
                    status = repr(exc)
                self.post_statuses[status] += 1
                if status == 200:
                    self.consumed_ok.update(ids)
                else:
                    self.post_errors.append(status)
                    self.queue = ids + self.queue
                    await asyncio.sleep(interval)
                continue
            if stop.is_set():
                break
            await asyncio.sleep(interval)
        self.client.close()


async def consume_phase(project, args) -> dict:
    await asyncio.to_thread(project.drain, args.drain_timeout)
    org = project.main
    stop_read, stop_post = asyncio.Event(), asyncio.Event()
    consumers = [Consumer(i, project.port, org) for i in range(args.consume_streams)]
    readers = [asyncio.ensure_future(c.read(stop_read)) for c in consumers]
    posters = [asyncio.ensure_future(c.post(stop_post)) for c in consumers]
    await asyncio.sleep(1.0)
    n, burst = args.consume_tasks, args.consume_burst

    def submit_all():
        ids, errors = [], 0
        while len(ids) < n:
            out = run_load(project.client, project.submit_v2, args.consume_concurrency, 0, 0,
                           total=min(burst, n - len(ids)))
            ids.extend(out["ids"])
            errors += out["errors"]
            if out["errors"] and not out["ids"]:
                raise RuntimeError(f"submit-task failing: {out['error']}")
            time.sleep(args.consume_pause)
        return ids, errors

    cpu0 = project.groups.cpu()
    t0 = now()
    ids, submit_errors = await asyncio.to_thread(submit_all)
    submit_s = now() - t0
    print(f"  consume: {len(ids)} v2 tasks submitted in bursts of {burst} at c={args.consume_concurrency} in "
          f"{submit_s:.1f} s ({submit_errors} errors), {args.consume_streams} streams of one key reading")

    def counts():
        with project.conn.cursor() as cur:
            cur.execute("SELECT count(*) FILTER (WHERE state IN ('succeeded', 'failed')) FROM tasks_app_task"
                        " WHERE id = ANY(%s::uuid[])", (ids,))
            terminal = cur.fetchone()[0]
            cur.execute("SELECT count(*) FILTER (WHERE state = 'pending'), count(*) FROM tasks_app_delivery"
                        " WHERE task_id = ANY(%s::uuid[])", (ids,))
            pending, deliveries = cur.fetchone()
        return terminal, pending, deliveries

    deadline = now() + max(args.drain_timeout, n / 20)
    while now() < deadline:
        terminal, pending, deliveries = await asyncio.to_thread(counts)
        if terminal >= len(ids):
            break
        await asyncio.sleep(0.5)
    t_terminal = now() - t0
    cpu = load.cpu_delta(cpu0, project.groups.cpu())
    grace_end = now() + args.consume_grace
    while now() < grace_end:
        terminal, pending, deliveries = await asyncio.to_thread(counts)
        if not pending and deliveries >= terminal:
            break
        await asyncio.sleep(0.25)
    t_consumed = now() - t0
    # Deliveries still pending that no connection received: were they only waiting for a wake-up?
    # One fresh notification on the stream's channel (what the worker publishes after each commit)
    # tells a lost wake-up (they arrive now) from a delivery the scan does not see (they do not).
    missing = await asyncio.to_thread(unreceived, project, ids, consumers)
    rescued = 0
    if missing:
        import redis

        client = redis.Redis.from_url(project.broker)
        client.publish(f"ricloud:aschannel:{org['stream']}", "1")
        client.close()
        await asyncio.sleep(3.0)
        rescued = sum(1 for tid in missing if any(tid in c.received for c in consumers))
        print(f"  consume: {len(missing)} pending deliveries never received by any connection after "
              f"{args.consume_grace:g} s of grace; after one fresh notification on the stream's channel "
              f"{rescued} of them arrived within 3 s")
    stop_read.set()
    for j in readers:
        j.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    stop_post.set()
    await asyncio.gather(*posters)
    await asyncio.sleep(0.5)
    with project.conn.cursor() as cur:
        cur.execute("SELECT id::text, state, results_consumed, has_results FROM tasks_app_task"
                    " WHERE id = ANY(%s::uuid[])", (ids,))
        tasks = {tid: (state, consumed, has) for tid, state, consumed, has in cur.fetchall()}
        cur.execute("SELECT task_id::text, state FROM tasks_app_delivery WHERE task_id = ANY(%s::uuid[])", (ids,))
        deliveries = {}
        for tid, state in cur.fetchall():
            deliveries.setdefault(tid, []).append(state)
    received_any = set().union(*(c.received for c in consumers))
    consumed_ok = set().union(*(c.consumed_ok for c in consumers))
    succeeded = sum(1 for state, _, _ in tasks.values() if state == "succeeded")
    skipped = [tid for tid in deliveries if tid not in received_any]
    dup_conn = sum(count - 1 for c in consumers for count in c.received.values() if count > 1)
    dup_ids = sum(1 for c in consumers for count in c.received.values() if count > 1)
    multi = sum(1 for tid in received_any if sum(1 for c in consumers if tid in c.received) > 1)
    lost = [tid for tid in consumed_ok if tid in deliveries and (any(s != "consumed" for s in deliveries[tid])
                                                                 or not tasks[tid][1])]
    not_consumed_deliveries = sum(1 for states in deliveries.values() for s in states if s != "consumed")
    not_consumed_tasks = sum(1 for _, consumed, has in tasks.values() if has and not consumed)
    foreign = received_any - set(ids)
    skipped = sorted(set(skipped) | set(missing))  # before the nudge: those count as skipped
    r = {"n": len(ids), "submit_errors": submit_errors, "rescued": rescued, "submit_s": submit_s, "terminal_s": t_terminal,
         "consumed_s": t_consumed, "succeeded": succeeded, "tasks": len(tasks), "deliveries": len(deliveries),
         "delivery_rows": sum(len(v) for v in deliveries.values()), "received": len(received_any),
         "skipped": len(skipped), "dup_conn": dup_conn, "dup_ids": dup_ids, "multi": multi, "lost": len(lost),
         "not_consumed_deliveries": not_consumed_deliveries, "not_consumed_tasks": not_consumed_tasks,
         "frames": sum(sum(c.received.values()) for c in consumers), "foreign": len(foreign),
         "per_conn": [sum(c.received.values()) for c in consumers],
         "posts": dict(sum((c.post_statuses for c in consumers), collections.Counter())),
         "errors": [c.error for c in consumers if c.error], "cpu": cpu}
    r["ok"] = (r["succeeded"] == r["n"] == args.consume_tasks and r["deliveries"] == r["n"] and not r["skipped"]
               and not dup_conn and not r["lost"] and not not_consumed_deliveries and not not_consumed_tasks
               and not r["errors"])
    print(f"  consume: all terminal {t_terminal:.1f} s after the first submit, all deliveries consumed "
          f"{t_consumed:.1f} s (CPU until all terminal: web {cpu['web']:.1f} s, worker {cpu['worker']:.1f} s); "
          f"{succeeded}/{len(ids)} succeeded, {r['deliveries']} tasks with a delivery "
          f"({r['delivery_rows']} rows), {r['received']} distinct task ids received ({r['frames']} messages; per "
          f"connection {r['per_conn']}; received by several connections: {multi}; not of this run: {len(foreign)})")
    print(f"  consume: skipped {len(skipped)} (of them received after one fresh notification: {rescued}), duplicates on one connection {dup_conn} ({dup_ids} ids), lost "
          f"consumptions {len(lost)}; deliveries not consumed at the end {not_consumed_deliveries}, tasks with "
          f"results not results_consumed {not_consumed_tasks}; results-consumed posts {r['posts']}"
          f"{'; stream errors: ' + '; '.join(r['errors']) if r['errors'] else ''}")
    if skipped[:3]:
        print(f"  consume: skipped e.g. {skipped[:3]}")
    if lost[:3]:
        print(f"  consume: lost consumptions e.g. {lost[:3]}")
    return r


def unreceived(project, ids, consumers) -> list[str]:
    with project.conn.cursor() as cur:
        cur.execute("SELECT task_id::text FROM tasks_app_delivery WHERE task_id = ANY(%s::uuid[]) AND state = 'pending'",
                    (ids,))
        pending = [row[0] for row in cur.fetchall()]
    return [tid for tid in pending if not any(tid in c.received for c in consumers)]


# --- phase 6: Flower's long-poll -------------------------------------------------------------------


async def flower_phase(peers, n, args) -> dict:
    port = peers.port
    r = {"n": n}

    def submit():
        out = run_load(lambda: Client(peers.base), peers.async_apply, 16, 0, 0, total=n)
        if out["errors"]:
            raise RuntimeError(f"Flower async-apply errors: {out['errors']} ({out['error']})")
        return out["ids"]

    def answered_with_result(x):
        if x["status"] != 200:
            return False
        return "result" in json.loads(x["body"])

    # 6b: long-polls of 60 s, the worker resumed once all are open
    pause(peers.worker)
    ids = await asyncio.to_thread(submit)
    sem = asyncio.Semaphore(args.open_concurrency or 10**6)
    progress = {"sent": 0}
    jobs = [asyncio.ensure_future(one_shot(port, "GET", f"/api/task/result/{tid}?timeout=60", sem=sem, timeout=150,
                                           progress=progress)) for tid in ids]
    while progress["sent"] + sum(1 for j in jobs if j.done()) < n:
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)  # every request sent and read by Flower
    resume(peers.worker)
    t_resume = now()
    recs = await asyncio.gather(*jobs)
    ok = [x for x in recs if answered_with_result(x)]
    times = sorted(x["t_answer"] - t_resume for x in ok)
    r["long"] = {"answered": len(ok), "in_window": sum(1 for t in times if t <= args.window),
                 "all_s": times[-1] if times else float("nan"),
                 "statuses": dict(collections.Counter(x["status"] for x in recs)),
                 "errors": sorted({x["error"] for x in recs if x["error"]})[:3]}
    lg = r["long"]
    # Flower's wake latency, as this project's: the answer at the client - the result stored
    # (date_done of celery-task-meta-<id>, written by the worker).
    from datetime import datetime

    metas = peers.redis.mget([f"celery-task-meta-{x_id}" for x_id in ids])
    stored = {}
    for tid, meta in zip(ids, metas, strict=True):
        if meta:
            done_at = json.loads(meta).get("date_done")
            if done_at:
                stored[tid] = datetime.fromisoformat(done_at).timestamp()
    lat = sorted(x["wall"] - stored[tid] for tid, x in zip(ids, recs, strict=True)
                 if answered_with_result(x) and tid in stored)
    lg["lat"] = [percentile(lat, q) * 1000 for q in (50, 95, 99, 100)]
    lg["within_100"] = sum(1 for v in lat if v <= 0.1)
    odd = [(x["status"], x.get("body", b"")[:160], x["error"]) for x in recs if not answered_with_result(x)]
    if odd:
        print(f"  Flower: {len(odd)} answers without the result, e.g. {odd[:2]}")
    print(f"  Flower: {n} tasks via async-apply with its worker paused, {n} concurrent GET /api/task/result/<id>"
          f"?timeout=60, worker resumed: {lg['in_window']} answered with the result within {args.window:g} s, "
          f"{lg['answered']} in all, the last {lg['all_s']:.1f} s after resuming (statuses {lg['statuses']}"
          f"{', errors ' + str(lg['errors']) if lg['errors'] else ''}); wake latency (answer at the client - "
          f"the result's date_done) p50/p95/p99/max {'/'.join(fmt(v) for v in lg['lat'])} ms, within 100 ms: "
          f"{lg['within_100']}/{n}")
    # 6a: the measure: holds of 2 s on work that does not run. On a fresh Flower: the
    # requests cut off at the end of the window keep it busy long after.
    load.stop(peers.flower)
    peers.start_flower()
    pause(peers.worker)
    ids = await asyncio.to_thread(submit)
    t0 = now()
    jobs = [asyncio.ensure_future(one_shot(peers.port, "GET",
                                           f"/api/task/result/{tid}?timeout={args.peer_hold_seconds:g}",
                                           sem=sem, timeout=150)) for tid in ids]
    await asyncio.sleep(max(0.0, t0 + args.window + 0.5 - now()))
    done = [j.result() for j in jobs if j.done()]
    for j in jobs:
        j.cancel()
    await asyncio.gather(*jobs, return_exceptions=True)
    times = sorted(x["t_answer"] - t0 for x in done if x["status"] == 200)
    r["short"] = {"in_window": sum(1 for t in times if t <= args.window), "answered": len(times),
                  "statuses": dict(collections.Counter(x["status"] for x in done)),
                  "errors": sorted({x["error"] for x in done if x["error"]})[:3]}
    print(f"  Flower: {n} concurrent GET /api/task/result/<id>?timeout={args.peer_hold_seconds:g} on work that does "
          f"not run (worker paused): {r['short']['in_window']} answered within {args.window:g} s (answers "
          f"{r['short']['statuses']}{', errors ' + str(r['short']['errors']) if r['short']['errors'] else ''}; "
          f"the rest were cut off)")
    resume(peers.worker)
    return r


# --- main ------------------------------------------------------------------------------------------


def int_list(text):
    return [int(x) for x in text.split(",") if x.strip()]


async def ours_main(project, args, phases, results):
    holds_n = args.holds if "holds" in phases else []
    streams_n = args.streams if "streams" in phases else []
    probe_at = set(holds_n + streams_n) if args.probe_at == "all" else set(int_list(args.probe_at))
    need = max([*holds_n, *streams_n, args.peer_n, 0])
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if need + 500 > limit:
        raise SystemExit(f"N={need} needs more file descriptors than RLIMIT_NOFILE={limit} allows")
    # organisations: holds (the main one first), streams, the probes' "other" organisation
    n_hold = max([1, *(math.ceil(n / HELD_PER_KEY) for n in holds_n + ([args.peer_n] if "holds" in phases else [])),
                  args.hold_orgs])
    n_stream = args.stream_orgs if streams_n else 0
    stamp = time.strftime("%H%M%S")
    t0 = time.perf_counter()
    created = await asyncio.to_thread(project.create_orgs, [f"held other {stamp}"]
                                      + [f"held hold {i} {stamp}" for i in range(1, n_hold)]
                                      + [f"held stream {i} {stamp}" for i in range(n_stream)])
    project.other, hold_orgs, stream_orgs = created[0], [project.main] + created[1:n_hold], created[n_hold:]
    for org in [project.other] + hold_orgs[1:]:
        org["session"] = await asyncio.to_thread(project.open_session, org)
    other = project.other

    def other_tasks():
        body = {"session": other["session"], "payload": load.V3_INFO_POLL}

        def create(client):
            status, data = client.request("POST", "/polls", body)
            if status != 201:
                raise RuntimeError(f"HTTP {status}: {data[:120]!r}")
            return True, json.loads(data)["id"]

        out = run_load(lambda: project.org_client(other), create, 16, 0, 0, total=args.other_tasks)
        project.drain(args.drain_timeout)
        return out

    out = await asyncio.to_thread(other_tasks)
    print(f"organisations: {len(hold_orgs)} for holds, {len(stream_orgs)} for streams, 1 other with "
          f"{len(out['ids'])} polls of one info task ({len(out['ids']) + 1} tasks) for the probes; "
          f"{time.perf_counter() - t0:.1f} s")
    for n in holds_n:
        print(f"\n-- {n} Ricloud-Await holds --")
        results["holds"][n] = await holds_phase(project, n, hold_orgs, args, n in probe_at)
    if "holds" in phases and "peer" in phases and args.peer_n not in results["holds"]:
        print(f"\n-- {args.peer_n} Ricloud-Await holds (for the comparison with Flower) --")
        results["holds"][args.peer_n] = await holds_phase(project, args.peer_n, hold_orgs, args, False)
    if "holds" in phases and "peer" in phases:
        print(f"\n-- {args.peer_n} holds of {args.peer_hold_seconds:g} s on work that does not run --")
        results["short"] = await short_holds_phase(project, args.peer_n, hold_orgs, args)
    for n in streams_n:
        print(f"\n-- {n} aschannel streams --")
        results["streams"][n] = await streams_phase(project, n, stream_orgs, args, n in probe_at)
    if "consume" in phases:
        print(f"\n-- {args.consume_tasks} v2 tasks streamed to {args.consume_streams} connections --")
        results["consume"] = await consume_phase(project, args)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(PHASES), help="phases: " + ",".join(PHASES))
    parser.add_argument("--holds", type=int_list, default=[100, 1000], help="N of concurrent holds (default 100,1000)")
    parser.add_argument("--streams", type=int_list, default=[100, 1000], help="N of concurrent streams")
    parser.add_argument("--probe-at", default="1000", help="N at which the meanwhile probes run (list, or 'all')")
    parser.add_argument("--await-seconds", type=float, default=60.0, help="Ricloud-Await of the holds (60)")
    parser.add_argument("--await-max", type=float, default=120.0, help="RICLOUD_AWAIT_MAX_SECONDS of the run (120)")
    parser.add_argument("--hold-orgs", type=int, default=0,
                        help="organisations (one key each) the holds are spread over (0: ceil(N/1000))")
    parser.add_argument("--stream-orgs", type=int, default=10, help="organisations the streams are spread over (10)")
    parser.add_argument("--open-concurrency", type=int, default=100,
                        help="connections being opened at once (100; 0: all at once)")
    parser.add_argument("--heartbeat-window", type=float, default=12.0, help="seconds of heartbeats per stream (12)")
    parser.add_argument("--probe-seconds", type=float, default=10.0, help="sequential GET /tasks seconds (10)")
    parser.add_argument("--throughput-seconds", type=float, default=5.0, help="GET /tasks throughput seconds (5)")
    parser.add_argument("--throughput-concurrency", type=int, default=8, help="GET /tasks throughput clients (8)")
    parser.add_argument("--other-tasks", type=int, default=500, help="polls of the probes' organisation (500)")
    parser.add_argument("--consume-tasks", type=int, default=10000, help="v2 tasks of the consume phase (10000)")
    parser.add_argument("--consume-streams", type=int, default=4, help="streams of the consume phase (4)")
    parser.add_argument("--consume-burst", type=int, default=500, help="tasks per burst (500)")
    parser.add_argument("--consume-pause", type=float, default=0.5, help="seconds between bursts (0.5)")
    parser.add_argument("--consume-concurrency", type=int, default=16, help="submitting clients (16)")
    parser.add_argument("--consume-grace", type=float, default=15.0,
                        help="seconds after all are terminal for the last deliveries to be received and consumed")
    parser.add_argument("--peer-n", type=int, default=1000, help="N of the comparison with Flower (1000)")
    parser.add_argument("--peer-hold-seconds", type=float, default=2.0, help="the issue's short holds (2 s)")
    parser.add_argument("--window", type=float, default=10.0, help="answered-within window of phase 6 (10 s)")
    parser.add_argument("--no-fresh-web", dest="fresh_web", action="store_false",
                        help="do not restart the web before each N (by default it is restarted and warmed, so that "
                             "its RSS is not flattered by memory freed in earlier phases)")
    parser.add_argument("--skip-peers", action="store_true", help="this project only (no Flower)")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_HELD_DATABASE_URL", DEFAULT_DATABASE_URL))
    parser.add_argument("--redis-url", default=load.DEFAULT_REDIS, help="Redis server (no database number)")
    parser.add_argument("--redis-db", type=int, default=5, help="this project's Redis database (flushed; 5)")
    parser.add_argument("--peer-redis-db", type=int, default=6, help="the peer's Redis database (flushed; 6)")
    parser.add_argument("--peer-venv", default=str(load.BENCH / ".peer-venv"))
    parser.add_argument("--drain-timeout", type=float, default=180.0, help="longest wait for a backlog")
    parser.add_argument("--keep-logs", action="store_true", help="keep the process logs after a successful run")
    args = parser.parse_args()
    phases = {p.strip() for p in args.only.split(",") if p.strip()}
    if phases - set(PHASES):
        parser.error(f"unknown phases: {', '.join(sorted(phases - set(PHASES)))}")
    if args.skip_peers:
        phases.discard("peer")
    if args.redis_db == args.peer_redis_db:
        parser.error("--redis-db and --peer-redis-db must differ")
    if "bench_held" not in args.database_url.rsplit("/", 1)[-1]:
        parser.error("the database name must contain 'bench_held' (its tables are emptied)")

    def on_term(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    nofile = raise_nofile()
    logdir = Path(tempfile.mkdtemp(prefix="ricloud-held-"))
    started = time.perf_counter()
    calib0, load0 = load.cpu_calibration(), os.getloadavg()[0]
    print(f"bench/held.py  {time.strftime('%Y-%m-%d %H:%M')}  {os.cpu_count()} cores, load average {load0:.2f}; "
          f"cpu calibration {calib0:.2f} s (quiet: ~0.7 s); RLIMIT_NOFILE {nofile}")
    print(f"phases: {', '.join(p for p in PHASES if p in phases)}; holds {args.holds}, streams {args.streams}, "
          f"probes at {args.probe_at}; Ricloud-Await {args.await_seconds:g} (max {args.await_max:g}); "
          f"{args.consume_tasks} consume tasks; peer N {args.peer_n}")
    results = {"holds": {}, "streams": {}}
    succeeded = False
    loop_name = "asyncio"
    try:
        import uvloop

        loop_factory, loop_name = uvloop.new_event_loop, "uvloop"
    except ImportError:
        loop_factory = None
    try:
        if phases != {"peer"}:  # `--only peer`: Flower alone (no ratios)
            print(f"\n== this project (client: one {loop_name} event loop) ==")
            project = Project(args, logdir)
            project.prepare()
            project.start()
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                runner.run(ours_main(project, args, phases, results))
            resume_all()
            project.stop()
        if "peer" in phases:
            print("\n== peer: Flower (its long-poll GET /api/task/result/<id>?timeout=) ==")
            peers = load.Peers(args, logdir)
            peers.start_worker()
            peers.start_flower()
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                results["flower"] = runner.run(flower_phase(peers, args.peer_n, args))
            resume_all()
            peers.stop()
        succeeded = True
    finally:
        resume_all()
        load.stop_all()
        shutil.rmtree(logdir / "var", ignore_errors=True)
        if not succeeded:
            print(f"\nprocess logs kept in {logdir}", file=sys.stderr)
    report(results, args)
    if not args.keep_logs:
        shutil.rmtree(logdir, ignore_errors=True)
    print(f"\ncpu calibration {load.cpu_calibration():.2f} s (at start {calib0:.2f} s); load average "
          f"{os.getloadavg()[0]:.2f} (at start {load0:.2f}); run time {time.perf_counter() - started:.0f} s"
          + (f"; logs in {logdir}" if args.keep_logs else ""))


def none_rps(h):
    return (h["none"]["thr"]["rps"] + h["none_after"]["thr"]["rps"]) / 2


def report(results, args):
    print("\n== results ==")
    rows = []

    def row(label, ours, peer="", r=""):
        rows.append((label, ours, peer, r))

    for n, h in sorted(results["holds"].items()):
        row(f"1 holds N={n} ({h['orgs']} key{'s' if h['orgs'] > 1 else ''}): answered", f"{h['answered']}/{n}")
        row(f"1 holds N={n}: wake latency p50/p95/p99/max",
            f"{fmt(h['p50'])}/{fmt(h['p95'])}/{fmt(h['p99'])}/{fmt(h['max'])} ms")
        row(f"1 holds N={n}: within 100 ms of settling", f"{h['within_100']}/{n}")
        row(f"4 holds N={n}: web RSS per hold (all; second half)",
            f"{h['rss_per_conn_kb']:.1f}; {fmt(h['rss_marginal_kb'])} KiB")
        row(f"3 holds N={n}: web CPU with nothing else to do (none held)", f"{h['idle1']:.1f} ms/s ({h['idle0']:.1f})")
    for n, s in sorted(results["streams"].items()):
        row(f"2 streams N={n} ({s['orgs']} orgs): greeted", f"{s['greeted']}/{n}")
        row(f"2 streams N={n}: greeting p50/p99/max", f"{fmt(s['g50'])}/{fmt(s['g99'])}/{fmt(s['gmax'])} ms")
        gaps = s["first"] + s["between"]
        gaps.sort()
        row(f"2 streams N={n}: heartbeat gaps min/p50/max",
            f"{fmt(gaps[0] if gaps else None, '', 2)}/{fmt(percentile(gaps, 50), '', 2)}/"
            f"{fmt(gaps[-1] if gaps else None, '', 2)} s")
        row(f"4 streams N={n}: web RSS per stream (all; second half)",
            f"{s['rss_per_conn_kb']:.1f}; {fmt(s['rss_marginal_kb'])} KiB")
        row(f"3 streams N={n}: web CPU with nothing else to do (none held)",
            f"{s['idle1']:.1f} ms/s ({s['idle0']:.1f})")
    for kind, phase in (("holds", results["holds"]), ("streams", results["streams"])):
        for n, h in sorted(phase.items()):
            if "held" not in h:
                continue
            none, held, after = h["none"], h["held"], h["none_after"]
            row(f"3 GET /tasks p50/p99, {n} {kind} held (none held: before; after)",
                f"{fmt(held['seq']['p50'])}/{fmt(held['seq']['p99'])} ms ({fmt(none['seq']['p50'])}/"
                f"{fmt(none['seq']['p99'])}; {fmt(after['seq']['p50'])}/{fmt(after['seq']['p99'])})")
            row(f"3 GET /tasks c={args.throughput_concurrency} req/s, {n} {kind} held (none held: before; after)",
                f"{fmt(held['thr']['rps'])} ({fmt(none['thr']['rps'])}; {fmt(after['thr']['rps'])})", "",
                fmt(ratio(held["thr"]["rps"], none_rps(h)), "x", 2) + " of none")
            row(f"3 web CPU ms per GET /tasks, {n} {kind} held (none held: before; after)",
                f"{fmt(held['thr']['cpu_ms'], '', 2)} ({fmt(none['thr']['cpu_ms'], '', 2)}; "
                f"{fmt(after['thr']['cpu_ms'], '', 2)})")
            row(f"3 web Postgres connections, {n} {kind} held: max total / per process",
                f"{held['pg_max']} / {held['pg_max_per_pid']}")
    c = results.get("consume")
    if c:
        row(f"5 consume {c['n']} tasks: skipped / dup per conn / lost",
            f"{c['skipped']} / {c['dup_conn']} / {c['lost']}")
        row("5 consume: skipped ones received after one fresh notification", f"{c['rescued']}")
        row("5 consume: received by several connections", f"{c['multi']}")
    fl = results.get("flower")
    h = results["holds"].get(args.peer_n)
    if h and fl:
        row(f"6 {args.peer_n} waits (60 s), answered within {args.window:g} s of the work resuming",
            f"{h['in_window']}", f"{fl['long']['in_window']} flower", fmt(ratio(h["in_window"], fl["long"]["in_window"]),
                                                                           "x", 2))
        row(f"6 {args.peer_n} waits (60 s), all answered after", f"{h['all_s']:.1f} s", f"{fl['long']['all_s']:.1f} s",
            fmt(ratio(h["all_s"], fl["long"]["all_s"]), "x", 2))
        row(f"6 {args.peer_n} waits (60 s), wake latency p50", f"{fmt(h['p50'])} ms", f"{fmt(fl['long']['lat'][0])} ms",
            fmt(ratio(h["p50"], fl["long"]["lat"][0]), "x", 2))
        row(f"6 {args.peer_n} waits (60 s), wake latency p99", f"{fmt(h['p99'])} ms", f"{fmt(fl['long']['lat'][2])} ms",
            fmt(ratio(h["p99"], fl["long"]["lat"][2]), "x", 2))
        row(f"6 {args.peer_n} waits (60 s), within 100 ms of the work settling", f"{h['within_100']}",
            f"{fl['long']['within_100']}", fmt(ratio(h["within_100"], fl["long"]["within_100"]), "x", 2))
    sh = results.get("short")
    if sh and fl:
        row(f"6 {args.peer_n} holds of {args.peer_hold_seconds:g} s (work not run): answered in {args.window:g} s",
            f"{sh['in_window']}", f"{fl['short']['in_window']} flower",
            fmt(ratio(sh["in_window"], fl["short"]["in_window"]), "x", 2))
    if rows:
        header = ("measure", "this project", "peer", "ratio")
        widths = [max(len(r[i]) for r in rows + [header]) for i in range(4)]
        print(" | ".join(x.ljust(w) for x, w in zip(header, widths, strict=True)))
        print("-+-".join("-" * w for w in widths))
        for r in rows:
            print(" | ".join(x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in
                             enumerate(zip(r, widths, strict=True))))

    print("\n== targets (report only) ==")

    def target(name, ok, detail):
        print(f"  {'PASS' if ok else ('FAIL' if ok is not None else 'n/a ')}  {name}: {detail}")

    for n, h in sorted(results["holds"].items()):
        target(f"{n} concurrent Ricloud-Await holds each answered within 100 ms of their work settling", h["ok"],
               f"{h['answered']}/{n} answered, {h['within_100']} within 100 ms, p99 {fmt(h['p99'])} ms, max "
               f"{fmt(h['max'])} ms, {h['early']} answered before the work ran, {h['unsettled']} not settled")
    for n, s in sorted(results["streams"].items()):
        target(f"{n} concurrent aschannel streams all greeted within 1 s of connecting", s["ok_greet"],
               f"{s['greeted']}/{n} greeted, max {fmt(s['gmax'])} ms")
        gaps = sorted(s["first"] + s["between"])
        target(f"{n} streams: heartbeats every {HEARTBEAT_S:g} s +- 1 s", s["ok_beats"],
               f"gaps {fmt(gaps[0] if gaps else None, ' s', 2)}..{fmt(gaps[-1] if gaps else None, ' s', 2)}, "
               f"{s['short']} streams short of heartbeats, {s['alive']} still open")
    for kind, phase in (("holds", results["holds"]), ("streams", results["streams"])):
        for n, h in sorted(phase.items()):
            if "held" not in h:
                continue
            held, none, after = h["held"], h["none"], h["none_after"]
            target(f"while {n} {kind} are held: GET /tasks?limit=100 of another organisation p99 <= 100 ms",
                   held["seq"]["p99"] <= 100, f"p99 {fmt(held['seq']['p99'])} ms (none held: "
                   f"{fmt(none['seq']['p99'])} ms before, {fmt(after['seq']['p99'])} ms after)")
            target(f"while {n} {kind} are held: web Postgres connections <= {POOL_THREADS} per process "
                   f"(pool threads)", held["pg_max_per_pid"] <= POOL_THREADS and h["pg_held"]["total"] <= POOL_THREADS
                   * max(1, len(h["pg_held"]["per_pid"])),
                   f"max {held['pg_max_per_pid']} per process, {held['pg_max']} in all")
            rt = ratio(held["thr"]["rps"], none_rps(h))
            target(f"while {n} {kind} are held: the ordinary API not slower (c={args.throughput_concurrency} "
                   f"GET /tasks req/s >= 0.9x none held, the mean of before and after; 10 % for noise)",
                   rt is not None and rt >= 0.9,
                   f"{fmt(held['thr']['rps'])} vs {fmt(none_rps(h))} req/s ({fmt(rt, 'x', 2)}; before "
                   f"{fmt(none['thr']['rps'])}, after {fmt(after['thr']['rps'])})")
    c = results.get("consume")
    if c:
        target(f"{c['n']} tasks streamed in bursts to {args.consume_streams} connections: 0 skipped, 0 duplicated "
               f"per connection, 0 lost consumptions, all succeeded and consumed", c["ok"],
               f"{c['succeeded']}/{c['n']} succeeded, skipped {c['skipped']}, duplicates {c['dup_conn']}, lost "
               f"{c['lost']}, deliveries not consumed {c['not_consumed_deliveries']}, tasks not results_consumed "
               f"{c['not_consumed_tasks']}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        resume_all()
        load.stop_all()
        sys.exit(130)
