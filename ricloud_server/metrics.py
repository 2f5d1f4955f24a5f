"""Prometheus metrics (`GET /metrics`; docs/DECISIONS.md 100-109).

Where each number comes from:

- **Recorded by the process that sees it**, in prometheus_client's multiprocess mode: HTTP
  requests (`RequestLogMiddleware`), held connections (ricloud_server/serve.py), and in the Celery
  worker the run time and queue wait of each task and every webhook attempt. The web's gunicorn
  workers and the Celery worker's pool processes each write memory-mapped files into one
  directory per process tree (`PROMETHEUS_MULTIPROC_DIR`, made by gunicorn's master for the web
  (ricloud_server/gunicorn_conf.py) and at `worker_init` for the worker when the operator does not
  set one); a scrape sums them.
- **Read at scrape time**, by the web's `/metrics` only: tasks per type and state (the
  `TaskCount` totals and deltas, services/counts.py: a few hundred rows however many tasks) and
  the Celery queues' Redis list lengths. Exact and the same whichever web process answers.

The web's `/metrics` shows the web tier and the scrape-time numbers; each Celery worker serves its
own on `RICLOUD_WORKER_METRICS_PORT` (off by default), since a worker may run on another host.
Both apply the same access rule (`allowed`). Recording costs no Redis or database call.
"""
import functools
import hmac
import ipaddress
import logging
import os
import re
import shutil
import tempfile
import threading
import time

__all__ = [
    "PUBLISHED_AT_HEADER",
    "allowed",
    "scrape_address",
    "observe_request",
    "held",
    "route_of",
    "prepare_multiprocess_dir",
    "render",
    "start_worker_server",
    "counted_attempt",
    "connect_worker_signals",
]

logger = logging.getLogger(__name__)

PUBLISHED_AT_HEADER = "ricloud_published"  # messages other than run_task's (which carry ricloud_sent)
AUTO_DIR_ENV = "RICLOUD_METRICS_AUTO_DIR"
AUTO_DIR_PREFIX = "ricloud-metrics-"  # + the maker's pid + "-" + random
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
TASK_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300)
WAIT_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900)
QUEUES = ("tasks", "webhooks")
# kombu's Redis transport keeps priorities other than 0 in lists named queue + "\x06\x16" + priority.
PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")
SCRAPE_TIMEOUT_SECONDS = 1.0  # each scrape-time read of Redis
FORWARDING_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")
PRIVATE_NETWORKS = "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7"


# --- the multiprocess directory -----------------------------------------------------------------

def prepare_multiprocess_dir() -> str:
    """Called once by the parent of the processes that record (gunicorn's master, the Celery
    worker's main process) before they fork: a fresh directory unless the operator named one
    (`PROMETHEUS_MULTIPROC_DIR`), which is emptied instead. Children inherit it from the
    environment; a directory this function made is removed when its maker exits."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path and os.environ.get(AUTO_DIR_ENV) != path:
        os.makedirs(path, exist_ok=True)
        for name in os.listdir(path):
            if name.endswith(".db"):
                os.unlink(os.path.join(path, name))
        return path
    maker = os.getpid()
    _remove_orphans()
    path = tempfile.mkdtemp(prefix=f"{AUTO_DIR_PREFIX}{maker}-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ[AUTO_DIR_ENV] = path

    import atexit

    atexit.register(lambda: os.getpid() == maker and shutil.rmtree(path, ignore_errors=True))
    return path


def _remove_orphans() -> None:
    """Directories of makers that died without their exit handlers (SIGKILL)."""
    root = tempfile.gettempdir()
    for name in os.listdir(root):
        if not name.startswith(AUTO_DIR_PREFIX):
            continue
        pid = name.removeprefix(AUTO_DIR_PREFIX).split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        except OSError:  # alive, another user's
            pass


def _multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class _Metrics:
    """The metric objects, made on first use (after the fork, once the directory is known)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values

        # prometheus_client picks its value class when imported; pick it again now that the
        # directory is (or is not) set, in case something imported it earlier.
        values.ValueClass = values.get_value_class()
        self.registry = None if _multiprocess() else CollectorRegistry(auto_describe=True)
        own = {"registry": self.registry}  # None in multiprocess mode: the files are what is scraped
        self.requests = Counter("ricloud_http_requests", "HTTP requests answered, by method, route and status.",
                                ["method", "route", "status"], **own)
        self.latency = Histogram("ricloud_http_request_duration_seconds",
                                 "Time from the request reaching Django to its answer (held requests and streams:"
                                 " to their end), by method and route.", ["method", "route"],
                                 buckets=LATENCY_BUCKETS, **own)
        self.held = Gauge("ricloud_held_connections", "Open Ricloud-Await holds (await) and aschannel streams (stream).",
                          ["kind"], multiprocess_mode="livesum", **own)
        self.held_refused = Counter("ricloud_held_refused", "Holds and streams refused with a 429 (RICLOUD_HELD_PER_KEY).",
                                    ["kind"], **own)
        self.worker_tasks = Counter("ricloud_worker_tasks", "Celery tasks run by this worker, by task name and outcome"
                                    " (run_task: succeeded, failed, suspended, lost; else ok or error).",
                                    ["task", "outcome"], **own)
        self.run_time = Histogram("ricloud_task_run_seconds", "Run time of ricloud.run_task messages (claim to end),"
                                  " by outcome.", ["outcome"], buckets=TASK_BUCKETS, **own)
        self.queue_wait = Histogram("ricloud_task_queue_wait_seconds", "Time from a message's sending to a worker"
                                    " starting it, by Celery task name.", ["task"], buckets=WAIT_BUCKETS, **own)
        self.webhook_attempts = Counter("ricloud_webhook_attempts", "Webhook delivery attempts, by outcome"
                                        " (delivered, http_4xx, http_5xx, error, refused).", ["outcome"], **own)
        self.children: dict = {}


_made: list = []
_making = threading.RLock()


def _m() -> _Metrics:
    if not _made:
        with _making:  # two first requests on two threads make one set (a registry refuses twins)
            if not _made:
                _made.append(_Metrics())
    return _made[0]


# --- recording (hot path: no I/O besides the mmap write) -----------------------------------------

_ROUTE_GROUP = re.compile(r"\(\?P<([^>]+)>[^)]*\)")
_route_cache: dict[tuple, str] = {}


def route_of(request) -> str:
    """The matched URL pattern as `/tasks/{id}` (bounded: never the raw path)."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        from tasks_app.ops import ENDPOINTS

        path = request.path_info
        path = path[:-1] if path.endswith("/") and len(path) > 1 else path
        return path if path in ENDPOINTS else "unresolved"
    pattern = match.route, request.path_info.endswith("/")  # v2 paths keep their trailing slash
    label = _route_cache.get(pattern)
    if label is None:
        if pattern[0] in ("^.*$", ".*"):
            label = "unmatched"
        else:
            text = _ROUTE_GROUP.sub(lambda group: "{" + group.group(1) + "}", pattern[0])
            label = "/" + text.replace("^", "").replace("$", "").replace("\\", "").replace("/?", "")
            label += "/" if pattern[1] and label != "/" else ""
        if len(_route_cache) < 1000:
            _route_cache[pattern] = label
    return label


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    m = _m()
    key = (method, route, status)
    children = m.children.get(key)
    if children is None:
        method_label = method if method in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS") else "other"
        children = (m.requests.labels(method_label, route, str(status)), m.latency.labels(method_label, route))
        if len(m.children) < 5000:
            m.children[key] = children
    children[0].inc()
    children[1].observe(seconds)


def held(kind: str, delta: int) -> None:
    """A hold (`await`) or a stream opened (+1) or ended (-1) in this web process."""
    _m().held.labels(kind).inc(delta)


def held_refused(kind: str) -> None:
    _m().held_refused.labels(kind).inc()


def counted_attempt(send):
    """Wraps a webhook `send` (workers/publishers/webhooks.py post): counts each attempt's outcome."""
    @functools.wraps(send)
    def wrapper(**kwargs):
        outcome = send(**kwargs)
        try:
            if outcome.ok:
                label = "delivered"
            elif outcome.status_code is not None:
                label = "http_4xx" if 400 <= outcome.status_code < 500 else "http_5xx"
            elif outcome.error.startswith("refused"):
                label = "refused"
            else:
                label = "error"
            _m().webhook_attempts.labels(label).inc()
        except Exception:  # noqa: BLE001 - a metric never fails a delivery
            logger.exception("webhook attempt not counted")
        return outcome
    return wrapper


# --- the Celery worker ---------------------------------------------------------------------------

_started: dict[str, float] = {}


def connect_worker_signals() -> None:
    from celery import signals

    signals.worker_init.connect(_worker_init, weak=False, dispatch_uid="ricloud-metrics-init")
    signals.task_prerun.connect(_task_prerun, weak=False, dispatch_uid="ricloud-metrics-prerun")
    signals.task_postrun.connect(_task_postrun, weak=False, dispatch_uid="ricloud-metrics-postrun")


def _worker_init(**kwargs) -> None:
    """In the worker's main process, before the pool forks: the directory, and the port."""
    from django.conf import settings

    prepare_multiprocess_dir()
    port = settings.RICLOUD_WORKER_METRICS_PORT
    if port:
        start_worker_server(port)


def _task_prerun(task_id=None, task=None, **kwargs) -> None:
    from tasks_app.services.dispatch import SENT_HEADER

    now = time.time()
    _started[task_id] = time.monotonic()
    request = getattr(task, "request", None)
    sent = getattr(request, SENT_HEADER, None) or getattr(request, PUBLISHED_AT_HEADER, None)
    if isinstance(sent, int | float) and not getattr(request, "retries", 0):
        _m().queue_wait.labels(task.name).observe(max(now - sent, 0.0))


def _task_postrun(task_id=None, task=None, retval=None, state=None, **kwargs) -> None:
    from tasks_app.services.dispatch import RUN_TASK

    started = _started.pop(task_id, None)
    m = _m()
    if task.name == RUN_TASK:
        outcome = retval if isinstance(retval, str) and state == "SUCCESS" else "error"
        if started is not None:
            m.run_time.labels(outcome).observe(time.monotonic() - started)
    else:
        outcome = "ok" if state == "SUCCESS" else "error"
    m.worker_tasks.labels(task.name, outcome).inc()


def start_worker_server(port: int, address: str = "") -> threading.Thread | None:
    """Serve this worker's metrics on `port` (a daemon thread of the main process)."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):  # the web's request log is enough; no line per scrape
            pass

    def app(environ, start_response):
        status, headers, body = respond(environ.get("REMOTE_ADDR", ""), environ.get("HTTP_AUTHORIZATION"),
                                        scrape_database=False)
        if environ.get("PATH_INFO", "/").rstrip("/") not in ("", "/metrics"):
            status, headers, body = 404, [("Content-Type", "application/json")], _error("not-found", "Not found.")
        start_response(f"{status} {_REASONS.get(status, '')}", headers)
        return [body]

    try:
        server = make_server(address, port, app, server_class=Server, handler_class=Quiet)
    except OSError as exc:
        logger.warning("worker metrics not served: port %s: %s", port, exc)
        return None
    thread = threading.Thread(target=server.serve_forever, name="ricloud-metrics", daemon=True)
    thread.start()
    logger.info("worker metrics on port %s (/metrics)", port)
    return thread


# --- access --------------------------------------------------------------------------------------

_REASONS = {200: "OK", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}


@functools.lru_cache(maxsize=8)
def _networks(value: str) -> tuple:
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in value.split(",") if part.strip())


def _address(value: str):
    """An address or, for an IPv6 client named by a trusted proxy, its /64 (as the rate limits
    count it), as a network; None if unreadable."""
    try:
        network = ipaddress.ip_network(value.strip().strip("[]"), strict=False)
    except ValueError:
        return None
    if network.version == 6 and network.prefixlen == 128 and network.network_address.ipv4_mapped:
        return ipaddress.ip_network(network.network_address.ipv4_mapped)
    return network


def scrape_address(meta) -> str:
    """The scraping client's address: REMOTE_ADDR, or what X-Forwarded-For says through
    RICLOUD_TRUSTED_PROXIES (tasks_app/ratelimit.py's rule); "" (unknown) for a request that a
    proxy not named there forwarded."""
    from django.conf import settings

    from tasks_app.ratelimit import client_address

    remote = meta.get("REMOTE_ADDR") or ""
    if not settings.RICLOUD_TRUSTED_PROXIES:
        # Relayed by a proxy nobody vouched for: the client is unknown (a reverse proxy on a
        # private address must not open the metrics to whoever it serves).
        return "" if any(meta.get(name) for name in FORWARDING_HEADERS) else remote
    forwarded = client_address(meta)
    return remote if forwarded == client_address({"REMOTE_ADDR": remote}) else forwarded


def allowed(address: str, authorization: str | None) -> tuple[int, str] | None:
    """None when a scrape from `address` with this Authorization header may read the metrics,
    else (401 or 403, message). With RICLOUD_METRICS_TOKEN set a `Bearer <token>` is required (and
    RICLOUD_METRICS_ALLOW, when set, also limits the addresses); without one only addresses in
    RICLOUD_METRICS_ALLOW may scrape (default: loopback and private networks)."""
    from django.conf import settings

    token = settings.RICLOUD_METRICS_TOKEN
    allow = settings.RICLOUD_METRICS_ALLOW
    if token:
        scheme, _, given = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            return 401, "Metrics need 'Authorization: Bearer <RICLOUD_METRICS_TOKEN>'."
        if not allow:
            return None
    try:
        networks = _networks(allow or PRIVATE_NETWORKS)
    except ValueError as exc:
        logger.error("RICLOUD_METRICS_ALLOW is not a list of addresses or CIDR blocks: %s", exc)
        return 403, "RICLOUD_METRICS_ALLOW is misconfigured; nothing is allowed."
    client = _address(address)
    if client is None or not any(client.subnet_of(network) for network in networks
                                 if network.version == client.version):
        return 403, "Metrics are not served to this address (RICLOUD_METRICS_ALLOW)."
    return None


def _error(code: str, message: str) -> bytes:
    import json

    return json.dumps({"error": code, "message": message, "params": {}}).encode()


def respond(address: str, authorization: str | None, *, scrape_database: bool = True):
    """(status, headers, body) of a scrape: the exposition, or the v3 error envelope."""
    refused = allowed(address, authorization)
    if refused is not None:
        status, message = refused
        headers = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
        if status == 401:
            headers.append(("WWW-Authenticate", 'Bearer realm="metrics"'))
        return status, headers, _error("unauthorized" if status == 401 else "forbidden", message)
    from prometheus_client import CONTENT_TYPE_LATEST

    return 200, [("Content-Type", CONTENT_TYPE_LATEST), ("Cache-Control", "no-store")], render(scrape_database)


# --- the scrape ----------------------------------------------------------------------------------

def render(scrape_database: bool = True) -> bytes:
    from prometheus_client import generate_latest

    return generate_latest(_scrape_registry(scrape_database))


def _scrape_registry(scrape_database: bool):
    with _making:
        return _scrape_registry_once(scrape_database)


@functools.cache
def _scrape_registry_once(scrape_database: bool):
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    m = _m()
    registry = CollectorRegistry()
    if m.registry is not None:  # one process (runserver, tests): its own metrics
        registry.register(_Forward(m.registry))
    else:
        MultiProcessCollector(registry)
    registry.register(BuildInfo())
    if scrape_database:
        registry.register(ScrapeCollector())
    return registry


class _Forward:
    def __init__(self, registry):
        self.registry = registry

    def describe(self):
        return []

    def collect(self):
        return self.registry.collect()


class BuildInfo:
    """`ricloud_build_info{version}` 1: which version answers (and never an empty exposition)."""

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        from ricloud_server import __version__

        info = GaugeMetricFamily("ricloud_build_info", "The ricloud-server version of this process.",
                                 labels=["version"])
        info.add_metric([__version__], 1)
        yield info


class ScrapeCollector:
    """Numbers read when scraped: tasks per type and state, and the Celery queues' depth."""

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        up = GaugeMetricFamily("ricloud_scrape_source_up", "Whether this scrape could read the source.",
                               labels=["source"])
        try:
            counts = _task_counts()
        except Exception as exc:  # noqa: BLE001 - a scrape never fails: the source is reported down
            logger.warning("metrics: task counts not read: %s", exc)
            _drop_broken_connections()
            up.add_metric(["database"], 0)
        else:
            up.add_metric(["database"], 1)
            from tasks_app.choices import TASK_TERMINAL

            created = CounterMetricFamily("ricloud_tasks_created", "Tasks created, by type (the tasks that exist:"
                                          " deleting tasks lowers it).", labels=["type"])
            finished = CounterMetricFamily("ricloud_tasks_finished", "Tasks that ended, by type and terminal state.",
                                           labels=["type", "state"])
            active = GaugeMetricFamily("ricloud_tasks_active", "Tasks not yet ended, by type and state.",
                                       labels=["type", "state"])
            by_type: dict[str, int] = {}
            for task_type, state, n in counts:
                by_type[task_type] = by_type.get(task_type, 0) + n
                (finished if state in TASK_TERMINAL else active).add_metric([task_type, state], n)
            for task_type, n in sorted(by_type.items()):
                created.add_metric([task_type], n)
            yield created
            yield finished
            yield active
        try:
            depths = _queue_depths()
        except Exception as exc:  # noqa: BLE001
            logger.warning("metrics: queue depth not read: %s", exc)
            up.add_metric(["redis"], 0)
        else:
            up.add_metric(["redis"], 1)
            if depths is not None:
                depth = GaugeMetricFamily("ricloud_queue_depth", "Messages waiting in each Celery queue (Redis list"
                                          " lengths, read at scrape time).", labels=["queue"])
                for queue, n in depths["queues"].items():
                    depth.add_metric([queue], n)
                yield depth
                unacked = GaugeMetricFamily("ricloud_queue_unacked", "Messages taken by workers and not yet"
                                            " acknowledged (running or reserved), all queues.")
                unacked.add_metric([], depths["unacked"])
                yield unacked
        yield up


def _task_counts() -> list[tuple[str, str, int]]:
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # The counters the GET /tasks totals use (services/counts.py): totals plus unfolded deltas.
            cursor.execute(
                "SELECT type, state, SUM(n) FROM (SELECT type, state, n FROM tasks_app_taskcount"
                " UNION ALL SELECT type, state, n FROM tasks_app_taskcountdelta) AS c"
                " GROUP BY type, state HAVING SUM(n) <> 0 ORDER BY type, state")
        else:  # the embedded SQLite default has no count triggers
            cursor.execute("SELECT type, state, COUNT(*) FROM tasks_app_task GROUP BY type, state ORDER BY type, state")
        return [(task_type, state, int(n)) for task_type, state, n in cursor.fetchall()]


def _drop_broken_connections() -> None:
    from tasks_app.middleware import drop_broken_connections

    drop_broken_connections()


@functools.lru_cache(maxsize=4)
def _broker(url: str):
    """A client of the broker with short timeouts: a scrape answers (with the source down) before
    Prometheus gives up on it, whatever Redis does."""
    import redis

    if url.startswith("redis+socket://"):
        url = "unix://" + url.removeprefix("redis+socket://")
    return redis.Redis.from_url(url, socket_timeout=SCRAPE_TIMEOUT_SECONDS, socket_connect_timeout=SCRAPE_TIMEOUT_SECONDS)


def _queue_depths() -> dict | None:
    from django.conf import settings

    url = settings.CELERY_BROKER_URL
    if not url.startswith(("redis://", "rediss://", "redis+socket://", "unix://")):
        return None
    client = _broker(url)
    pipe = client.pipeline(transaction=False)
    for queue in QUEUES:
        for suffix in PRIORITY_SUFFIXES:
            pipe.llen(queue + suffix)
    pipe.hlen("unacked")
    replies = pipe.execute()
    queues = {queue: sum(replies[i * len(PRIORITY_SUFFIXES):(i + 1) * len(PRIORITY_SUFFIXES)])
              for i, queue in enumerate(QUEUES)}
    return {"queues": queues, "unacked": replies[-1]}
