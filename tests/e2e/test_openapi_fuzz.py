"""The fuzz pass: schemathesis generates requests for every operation of /schema (valid and
invalid, a bounded number each, from a fixed seed) and sends them to a live server on the real
Postgres and Redis, with a real key. Every response must be documented and match its schema;
no 5xx; every 4xx in the error envelope of its API generation. A subset runs unauthenticated.

Half the cases (chosen by a hash of the case, so the run is deterministic) are made realistic
first: ids in the path, the body and the query are replaced by ids of a small world built
beforehand (a user, an active session, a finished poll with results, configs, a v2 account and
task...), so that updates, deletes and acks reach real objects instead of stopping at a 404.

The server is the production web process (the Procfile's `web` line: gunicorn running
ricloud_server.serve), so its HTTP parsing, thread pool and held responses are fuzzed too.

What the pass holds back, and why:
- `Ricloud-Await` is never sent (a held request would cost up to 10 s a case);
- `/stream/` never ends when it is allowed: it is read up to its greeting and closed;
- no Celery worker runs, so nothing leaves this machine (webhook and storage tests stay queued),
  and host names are never resolved (socket.getaddrinfo answers only for loopback names).
"""
import json
import os
import re
import socket
import time
import zlib
from collections import Counter
from dataclasses import dataclass

import jsonschema
import pytest
import requests
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tasks_app.models import Event, Result, Task
from workers.runner import run

from .conftest import LiveApi, Web

pytestmark = [pytest.mark.e2e, pytest.mark.fuzz, pytest.mark.django_db(transaction=True)]

SEED = 20240229
EXAMPLES_PER_OPERATION = 12
UNAUTHENTICATED_EXAMPLES = 3
STATS = Counter()


def fuzz_config(max_examples: int, *, coverage: bool = True) -> schemathesis.Config:
    """Examples, coverage (schemathesis' deterministic edge cases: boundaries, wrong types, missing
    and extra fields, other methods) and fuzzing with `max_examples` valid and invalid cases an
    operation; no example database (nothing is written to the checkout), no stateful phase."""
    return schemathesis.Config.from_dict({
        "seed": SEED,
        "suppress-health-check": ["all"],
        "generation": {"mode": "all", "max-examples": max_examples, "deterministic": True, "database": "none",
                       "with-security-parameters": False},  # the tests send the Authorization header
        "phases": {"coverage": {"enabled": coverage}, "stateful": {"enabled": False}},
    })


# --- the world the realistic cases point into -----------------------------------------------


@dataclass
class World:
    key_id: int
    other_key_id: int
    user_id: int
    source_id: int
    session_id: str
    poll_id: str
    task_id: str
    result_id: str
    event_id: str
    subscription_id: str
    permissions_id: int
    webhook_config_id: int
    storage_config_id: int
    v2_task_id: str
    account: str
    stream: str

    def path_id(self, path: str):
        prefixes = {
            "/keys/": self.other_key_id, "/users/": self.user_id, "/sources/": self.source_id,
            "/sessions/": self.session_id, "/polls/": self.poll_id, "/tasks/": self.task_id,
            "/results/": self.result_id, "/events/": self.event_id, "/subscriptions/": self.subscription_id,
            "/permissions/": self.permissions_id, "/configs/webhook/": self.webhook_config_id,
            "/configs/storage/": self.storage_config_id, "/fetch/": self.v2_task_id,
        }
        return next((value for prefix, value in prefixes.items() if path.startswith(prefix)), None)

    def reference(self, name: str):
        """The id a body or query field of this name names, or None."""
        return {
            "session": self.session_id, "subscription": self.subscription_id, "poll": self.poll_id,
            "task": self.task_id, "user": self.user_id, "key": self.other_key_id, "source": self.source_id,
            "parent": self.source_id, "storage_config": self.storage_config_id,
            "storage_config_default": self.storage_config_id, "webhook_config": self.webhook_config_id,
            "webhook_config_default": self.webhook_config_id, "ids": [self.result_id],
            "results": [self.result_id], "username": self.account, "account": self.account, "service": "icloud",
            "task_ids": [self.v2_task_id], "stream": self.stream,
        }.get(name)


def run_all(**filters) -> None:
    for task_id in Task.objects.filter(**filters).order_by("id").values_list("id", flat=True):
        run(task_id, max_attempts=5)


def build_world(api: LiveApi, key, storage_root) -> World:
    other_key = api.call("POST", "/keys", expect=201, json={})
    session = api.open_session("fuzz@example.com", wait=False)
    run_all(session_id=session["id"], type="session.init")
    poll = api.call("POST", "/polls", expect=201, json={
        "session": session["id"], "payload": {"info_types": ["*"], "data_types": ["photos"]}})
    run_all(poll_id=poll["id"])
    subscription = api.call("POST", "/subscriptions", expect=201, json={
        "session": session["id"], "poll_payload": {"info_types": ["*"]}, "interval": 86400})
    permissions = api.call("POST", "/permissions", expect=201, json={
        "identifier": "fuzz", "scopes": {"source_type:*": []}, "key": other_key["id"]})
    webhook = api.call("POST", "/configs/webhook", expect=201, json={"url": "http://127.0.0.1:9/fuzz"})
    storage = api.call("POST", "/configs/storage", expect=201, json={"url": f"local://{storage_root}"})
    account = "fuzz@icloud.example"
    api.call("POST", "/register-account/", data={"service": "icloud", "username": account})
    v2_task = api.call("POST", "/submit-task/", data={
        "service": "icloud", "action": "log-in", "account": account, "password": "pw"})
    run(v2_task["task_id"], max_attempts=5)
    result = Result.objects.filter(poll_id=poll["id"]).order_by("id").first()
    assert result is not None, "the world's poll published no result"
    return World(
        key_id=key.id, other_key_id=other_key["id"], user_id=session["user"], source_id=session["source"]["id"],
        session_id=session["id"], poll_id=poll["id"], task_id=str(Task.objects.filter(poll_id=poll["id"]).first().id),
        result_id=str(result.id), event_id=str(Event.objects.order_by("id").first().id),
        subscription_id=subscription["id"], permissions_id=permissions["id"], webhook_config_id=webhook["id"],
        storage_config_id=storage["id"], v2_task_id=v2_task["task_id"], account=account, stream=v2_task["stream"],
    )


@pytest.fixture
def loopback_only(monkeypatch):
    """Generated URLs name hosts anywhere: this run resolves none of them."""
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host in ("localhost", "127.0.0.1", "::1", None) or str(host).startswith("127."):
            return real(host, *args, **kwargs)
        raise socket.gaierror(socket.EAI_NONAME, "not resolved during the fuzz pass")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def fuzz_server(transactional_db, settings, broker, storage_dir, loopback_only, tmp_path):
    """The Procfile's web process (gunicorn running ricloud_server.serve), as in production, on the
    test database and broker; without rate limits, with private webhook targets allowed (so that
    no URL is resolved) and a short aschannel heartbeat (a closed stream is noticed at once)."""
    settings.RICLOUD_STORAGE_URL = f"local://{storage_dir}"  # where the world's tasks, run here, publish
    web = Web(tmp_path / "web.log", storage_dir, RICLOUD_RATE_LIMIT_FAILED_AUTH="", RICLOUD_WEBHOOK_ALLOW_PRIVATE=1,
              RICLOUD_LOCAL_STORAGE_ROOTS=tmp_path / "storage", RICLOUD_ASCHANNEL_HEARTBEAT_SECONDS=0.5,
              RICLOUD_ASMASTER_WAIT_SECONDS=0)  # no worker: asmaster answers at once (steps stay pending)
    yield web
    web.stop()
    broker.flushdb()  # the messages of the tasks this pass created: no worker will ever run them


@pytest.fixture
def world(fuzz_server, e2e_key, tmp_path):
    return build_world(LiveApi(fuzz_server.url, e2e_key), e2e_key, tmp_path / "storage" / "fuzz")


@pytest.fixture
def contract(fuzz_server):
    """The served contract, fetched like any client would."""
    return requests.get(f"{fuzz_server.url}/schema", timeout=30).json()


@pytest.fixture
def api_schema(contract, fuzz_server):
    return schemathesis.openapi.from_dict(contract, config=fuzz_config(EXAMPLES_PER_OPERATION))


@pytest.fixture
def anonymous_schema(contract, fuzz_server):
    return schemathesis.openapi.from_dict(contract, config=fuzz_config(UNAUTHENTICATED_EXAMPLES, coverage=False))


# --- checks -----------------------------------------------------------------------------------


def in_its_envelope(ctx, response, case):
    """Every 4xx (and 5xx) body is the error envelope of the operation's API generation."""
    if response.status_code < 400:
        return None
    generation = case.operation.definition.raw.get("x-api-generation")
    components = case.operation.schema.raw_schema["components"]["schemas"]
    body = json.loads(response.content)
    if generation == "v2":
        envelope = {"oneOf": [components["V2Error"], components["V2Message"]]}
    else:
        envelope = components["Error"]
    jsonschema.validate(body, envelope)
    return True


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, in_its_envelope]

# What the web process logs for an error no response shows (one raised inside a stream already
# started, say): Django's 500s, uvicorn's unhandled exceptions, an unreadable delivery.
SERVER_ERRORS = re.compile(r"Internal Server Error|Exception in ASGI application|is unreadable")


def assert_no_server_error_logged(web) -> None:
    errors = [line for line in web.log_path.read_text(errors="replace").splitlines() if SERVER_ERRORS.search(line)]
    assert not errors, f"the web process logged errors ({web.log_path}): {errors[:5]}"


# --- the cases --------------------------------------------------------------------------------


def realistic(case) -> bool:
    """Half the cases, by a stable hash of what was generated (no randomness between runs)."""
    generated = json.dumps([case.path_parameters, case.query, case.body], default=str, sort_keys=True)
    return zlib.crc32(generated.encode()) % 2 == 0


def make_realistic(case, world: World) -> None:
    path = case.operation.path
    if case.path_parameters and world.path_id(path) is not None:
        name = next(iter(case.path_parameters))
        case.path_parameters[name] = world.path_id(path)
    for container in (case.query, case.body if isinstance(case.body, dict) else None):
        for name in list(container or ()):
            value = world.reference(name)
            if value is not None:
                container[name] = value
    if path == "/sessions" and isinstance(case.body, dict) and isinstance(case.body.get("source"), dict):
        case.body["source"]["user"] = world.user_id


def protect_the_key(case, world: World) -> None:
    """Fuzzing POST /keys/{id} must not deactivate or rotate the key the pass runs as."""
    if case.operation.path.startswith("/keys/{id}") and str(case.path_parameters.get("id")) == str(world.key_id):
        case.path_parameters["id"] = world.other_key_id


def send(case, base_url: str, headers: dict):
    if case.operation.path == "/stream/":
        return read_stream_start(case, base_url, headers)
    return case.call(base_url=base_url, headers=headers, timeout=30)


def read_stream_start(case, base_url: str, headers: dict):
    """An allowed stream never ends: check its start (the greeting's frame) and hang up."""
    kwargs = case.as_transport_kwargs(base_url=base_url, headers=headers)
    response = requests.request(**kwargs, stream=True, timeout=(5, 10))
    if response.status_code == 200:
        with response:
            assert response.headers["Content-Type"] == "application/octet-stream"
            assert response.raw.readline().strip().isdigit(), "the stream does not start with a frame"
        STATS["stream opened"] += 1
        return None
    response.content  # noqa: B018 - an error is an ordinary finite body: read it whole
    return response


def exercise(case, base_url: str, world: World, headers: dict) -> None:
    if case.headers:
        case.headers.pop("Ricloud-Await", None)
    if realistic(case):
        make_realistic(case, world)
    protect_the_key(case, world)
    started = time.monotonic()
    response = send(case, base_url, headers)
    STATS["cases"] += 1
    STATS["seconds in requests"] += time.monotonic() - started
    if response is None:
        return
    STATS[f"{response.status_code // 100}xx"] += 1
    case.validate_response(response, checks=CHECKS)


ANONYMOUS = re.compile(
    r"^(GET /organisation|GET /tasks|POST /users/\{id\}|POST /sessions|POST /results/ack|POST /configs/storage/\{id\}/test"
    r"|GET /account/|POST /submit-task/|POST /task-status/|GET /stream/|GET /fetch/\{task_id\}/)$"
)


def fuzz(schema, subtests, exercise_case, only=None) -> int:
    """Run schemathesis' Hypothesis test of each operation (examples, coverage and fuzzing
    phases), each as a subtest. (schemathesis' own `@schema.parametrize()` does not run under
    pytest 9.2: it sets `Node._nodeid`, which pytest 9.2 no longer has.)"""
    from schemathesis.core.failures import FailureGroup, as_reported_failure
    from schemathesis.pytest.lazy import get_all_tests

    def test_func(case):
        exercise_case(case)

    ran = 0
    for result in get_all_tests(schema=schema, test_func=test_func, settings=None, given_kwargs=None):
        operation, test = result.ok()
        if only is not None and not only.search(operation.label):
            continue
        ran += 1
        with subtests.test(msg=operation.label):
            try:
                test()
            except FailureGroup as exc:
                raise as_reported_failure(exc) from None
    assert ran, "no operation was fuzzed"
    return ran


def test_every_operation_with_a_key(api_schema, subtests, fuzz_server, world, e2e_key, capsys):
    headers = {"Authorization": f"Token {e2e_key.plaintext_token}"}
    STATS.clear()
    started = time.monotonic()
    only = re.compile(os.environ["FUZZ_OPERATIONS"]) if os.environ.get("FUZZ_OPERATIONS") else None  # e.g. "POST /polls"
    operations = fuzz(api_schema, subtests, lambda case: exercise(case, fuzz_server.url, world, headers), only=only)
    statuses = ", ".join(f"{STATS[name]} {name}" for name in ("2xx", "4xx", "5xx") if STATS[name])
    assert_no_server_error_logged(fuzz_server)
    with capsys.disabled():  # one line in the suite's output: what the pass did
        print(f"\nfuzz pass: {operations} operations, {STATS['cases']} cases ({statuses}; "
              f"{STATS['stream opened']} streams opened) in {time.monotonic() - started:.0f} s")


def test_operations_without_a_valid_key_are_401(anonymous_schema, subtests, fuzz_server):
    def exercise_anonymously(case):
        if case.headers:
            case.headers.pop("Ricloud-Await", None)
        for headers in ({}, {"Authorization": "Token not-a-key"}):
            response = send(case, fuzz_server.url, headers)
            assert response is not None
            case.validate_response(response, checks=CHECKS)
            if case.method.upper() != case.operation.method.upper():
                continue  # a probe with another method: a 405 before anything else
            if response.status_code == 404 and json.loads(response.content)["message"] == "No such endpoint.":
                continue  # a generated path parameter that no route matches (`.`, `/`)
            assert response.status_code == 401, (case.operation.label, response.status_code)

    fuzz(anonymous_schema, subtests, exercise_anonymously, only=ANONYMOUS)
    assert_no_server_error_logged(fuzz_server)
