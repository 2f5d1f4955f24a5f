"""Sixteen concurrent writers against the live server while real Celery workers run the tasks.

The writers mix v3 `POST /polls` (1 to 200 files; info and data types), `POST /sessions` then
`DELETE /sessions/{id}` while other writers poll on that session, and v2 `POST /submit-task/`,
over three keys of two organisations. Everything asserted is what a user sees: no 5xx, only the
answers each request may give, and afterwards exactly the tasks the responses announced, all
terminal, counted right by `GET /tasks`, every poll `completed`, and the work of an expired session
failed with `session-expired` unless it had already run.
"""
import random
import threading
import time
import uuid
from collections import Counter, defaultdict

import pytest

from tasks_app.models import Task
from tasks_app.services.integrity import orphans
from tasks_app.services.organisations import create_key, create_organisation
from workers.handlers import catalogue, mockdata

from .conftest import LiveApi, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

WRITERS = 16
# Each writer runs at least MIN_OPS operations and keeps going until STORM_SECONDS have passed
# (at most MAX_OPS): enough on a slow engine to hit its races, several seconds on a fast one.
MIN_OPS, MAX_OPS, STORM_SECONDS = 7, 30, 5
SEED = 20261124
RICH = "john.appleseed@reincubate.com"
IDENTIFIERS = (RICH, "alice.smith@example.com", "kiran@example.com")
INFO_TYPES, DATA_TYPES = catalogue("mocks.mock")
V2_DATA = ("sms", "messages", "whatsapp_messages", "photos", "call_history", "contacts", "notes")
TASK_STATES = ("pending", "processing", "suspended", "succeeded", "failed")
ACTIVE = ("pending", "processing", "suspended")


def real_file_ids(identifier: str) -> list[str]:
    """Every file id the mock's data documents of this source reference."""
    ids = []
    for data_type in DATA_TYPES:
        ids += mockdata.list_file_ids(mockdata.data_document(identifier, data_type))
    return list(dict.fromkeys(ids))


class Ledger:
    """What the responses said, recorded by every writer thread."""

    def __init__(self):
        self.lock = threading.Lock()
        self.server_errors = []  # (what, status, body)
        self.unexpected = []
        self.requests = Counter()  # (what, status) → count
        self.tasks = Counter()  # organisation id → tasks the responses announced
        self.polls = {}  # poll id → (organisation id, key, [task ids])
        self.sessions = {}  # session id → organisation id
        self.expired = set()  # sessions whose DELETE answered
        self.v2_tasks = set()
        self.doomed = defaultdict(list)  # organisation id → [(session id, identifier)] about to be deleted

    def check(self, what: str, response, allowed: dict):
        """Record a response; `allowed` maps each acceptable status to the error code it must carry
        (None: a success). Returns the body of an acceptable success, else None."""
        try:
            body = response.json()
        except ValueError:
            body = response.text
        with self.lock:
            self.requests[(what, response.status_code)] += 1
            if response.status_code >= 500:
                self.server_errors.append((what, response.status_code, body))
                return None
            if response.status_code not in allowed:
                self.unexpected.append((what, response.status_code, body))
                return None
        code = allowed[response.status_code]
        if code is not None:
            if not isinstance(body, dict) or body.get("error") != code:
                with self.lock:
                    self.unexpected.append((what, response.status_code, body))
            return None
        return body

    def poll_created(self, organisation_id, key, body):
        ids = [task for state in TASK_STATES for task in body[f"tasks_{state}"]]
        with self.lock:
            self.polls[body["id"]] = (organisation_id, key, ids)
            self.tasks[organisation_id] += len(ids)

    def session_created(self, organisation_id, body):
        with self.lock:
            self.sessions[body["id"]] = organisation_id
            self.tasks[organisation_id] += 1  # its session.init


class Writer:
    """One writer thread: a seeded sequence of operations as one key."""

    def __init__(self, number, ledger, api, v2_api, sessions, users, files):
        self.rng = random.Random(SEED + number)
        self.ledger, self.api, self.v2_api = ledger, api, v2_api
        self.organisation_id = api.key.organisation_id
        self.sessions, self.users, self.files = sessions, users, files

    def run(self, until: float):
        operations = [self.poll_files, self.poll_types, self.session_lifecycle, self.poll_doomed_session, self.v2_submit]
        done = 0
        while done < MAX_OPS and (done < MIN_OPS or time.monotonic() < until):
            self.rng.choices(operations, weights=[3, 3, 1, 2, 2])[0]()
            done += 1

    # --- v3 -------------------------------------------------------------------------------------

    def post_poll(self, session_id, payload, *, expiring=False):
        response = self.api.request("POST", "/polls", json={"session": session_id, "payload": payload})
        allowed = {201: None, 400: "session-expired"} if expiring else {201: None}
        body = self.ledger.check("POST /polls" + (" (expiring session)" if expiring else ""), response, allowed)
        if body is not None:
            assert body["state"] in ("pending", "processing", "completed"), body
            self.ledger.poll_created(self.organisation_id, self.api.key.id, body)

    def type_payload(self, *, failures: bool) -> dict:
        info = self.rng.choice([[], ["*"], ["account.info"], ["account.devices"]])
        data = self.rng.sample(DATA_TYPES, self.rng.randint(0 if info else 1, 4))
        payload = {name: items for name, items in (("info_types", info), ("data_types", data)) if items}
        if failures and self.rng.random() < 0.3:
            payload["mock"] = {"fail": [self.rng.choice(data or list(INFO_TYPES))]}
        return payload

    def file_ids(self, identifier: str, count: int) -> list[str]:
        """Up to `count` real file ids of the source, topped up with ids it does not have
        (accepted at creation; those tasks fail with file-not-found)."""
        real = self.files[identifier]
        ids = self.rng.sample(real, min(count, len(real)))
        return ids + [f"photos-{n}-missing-{uuid.uuid4().hex[:8]}" for n in range(count - len(ids))]

    def poll_files(self):
        session_id, identifier = self.rng.choice(self.sessions)
        count = self.rng.randint(100, 200) if self.rng.random() < 0.12 else self.rng.randint(1, 20)
        payload = {"files": self.file_ids(identifier, count)}
        if self.rng.random() < 0.3:
            payload["data_types"] = ["photos"]  # the files wait for this data task of the same poll
        self.post_poll(session_id, payload)

    def poll_types(self):
        session_id, _ = self.rng.choice(self.sessions)
        self.post_poll(session_id, self.type_payload(failures=True))

    def doomed_payload(self, identifier: str) -> dict:
        """Work that succeeds if it runs (no failure controls, only real files)."""
        if self.rng.random() < 0.5:
            return self.type_payload(failures=False)
        real = self.files[identifier]
        return {"files": self.rng.sample(real, self.rng.randint(1, min(20, len(real))))}

    def session_lifecycle(self):
        """POST /sessions, a poll on it, then DELETE it while other writers poll on it too."""
        identifier = self.rng.choice(IDENTIFIERS)
        response = self.api.request("POST", "/sessions", json={
            "source": {"user": self.rng.choice(self.users), "type": "mocks.mock", "identifier": identifier},
            "payload": {"password": "pw"},
        })
        body = self.ledger.check("POST /sessions", response, {201: None})
        if body is None:
            return
        self.ledger.session_created(self.organisation_id, body)
        with self.ledger.lock:
            self.ledger.doomed[self.organisation_id].append((body["id"], identifier))
        self.post_poll(body["id"], self.doomed_payload(identifier), expiring=True)
        response = self.api.request("DELETE", f"/sessions/{body['id']}")
        deleted = self.ledger.check("DELETE /sessions/{id}", response, {200: None})
        if deleted is not None:
            assert deleted["state"] == "expired" and deleted["id"] == body["id"], deleted
            with self.ledger.lock:
                self.ledger.expired.add(body["id"])

    def poll_doomed_session(self):
        with self.ledger.lock:
            recent = self.ledger.doomed[self.organisation_id][-4:]
        if not recent:
            return self.poll_types()
        session_id, identifier = self.rng.choice(recent)
        self.post_poll(session_id, self.doomed_payload(identifier), expiring=True)

    # --- v2 -------------------------------------------------------------------------------------

    def v2_submit(self):
        action = self.rng.choice(["fetch-data", "fetch-data", "list-devices", "log-in"])
        form = {"service": "icloud", "action": action, "account": RICH}
        if action == "fetch-data":
            form["data"] = ",".join(self.rng.sample(V2_DATA, self.rng.randint(1, 3)))
        elif action == "log-in":
            form["password"] = "joshua"
        response = self.v2_api.request("POST", "/submit-task/", data=form)
        body = self.ledger.check("POST /submit-task/", response, {200: None})
        if body is not None:
            assert body["success"] is True and body["task_id"], body
            with self.ledger.lock:
                self.ledger.v2_tasks.add(body["task_id"])
                self.ledger.tasks[self.v2_api.key.organisation_id] += 1


def total_count(api: LiveApi, **filters) -> int:
    return api.get("/tasks", limit=1, **filters)["total_count"]


def test_concurrent_writers_see_no_errors_and_exact_counts(live_api, start_worker, settings):
    settings.RICLOUD_RATE_LIMIT_ORGANISATION = ""
    settings.RICLOUD_RATE_LIMIT_KEY = ""
    first, key_a1 = create_organisation(name="Concurrency A")
    key_a2 = create_key(organisation=first)
    second, key_b = create_organisation(name="Concurrency B")
    start_worker()
    start_worker()
    ledger = Ledger()
    apis = [live_api(key) for key in (key_a1, key_a2, key_b)]

    # Each key gets users and settled sessions on the mock sources; org B's key also a v2 account.
    setup = {}
    for api in apis:
        users = []
        for n in range(2):
            response = api.request("POST", "/users", json={"identifier": f"writer-{api.key.id}-{n}@example.com"})
            users.append(ledger.check("POST /users", response, {201: None})["id"])
        sessions = []
        for identifier in IDENTIFIERS:
            response = api.request("POST", "/sessions", json={
                "source": {"user": users[0], "type": "mocks.mock", "identifier": identifier},
                "payload": {"password": "pw"},
            })
            session = ledger.check("POST /sessions", response, {201: None})
            ledger.session_created(api.key.organisation_id, session)
            sessions.append((session["id"], identifier))
        setup[api.key.id] = (sessions, users)
    v2_api = apis[2]
    assert v2_api.call("POST", "/register-account/", data={"service": "icloud", "username": RICH})["success"]
    login = v2_api.call("POST", "/submit-task/", data={"service": "icloud", "action": "log-in", "account": RICH,
                                                       "password": "joshua"})
    ledger.tasks[key_b.organisation_id] += 1
    ledger.v2_tasks.add(login["task_id"])
    wait_for(lambda: not Task.objects.filter(state__in=ACTIVE).exists(), timeout=60)
    assert Task.objects.get(id=login["task_id"]).state == "succeeded"

    files = {identifier: real_file_ids(identifier) for identifier in IDENTIFIERS}
    writers = [
        Writer(n, ledger, live_api(apis[n % 3].key), live_api(key_b), *setup[apis[n % 3].key.id], files)
        for n in range(WRITERS)
    ]
    failures = []

    def run(writer):
        try:
            writer.run(until=started + STORM_SECONDS)
        except BaseException as exc:  # noqa: BLE001 - reported below with the other findings
            failures.append(repr(exc))

    threads = [threading.Thread(target=run, args=(writer,)) for writer in writers]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)

    print(f"writers done in {time.monotonic() - started:.1f}s;", "responses:", dict(sorted(ledger.requests.items())))
    for what, status, body in ledger.server_errors:
        print(f"5xx on {what}: {status} {body!r:.3000}")
    assert not ledger.server_errors, f"{len(ledger.server_errors)} server error(s): {ledger.server_errors[:3]!r:.3000}"
    assert not ledger.unexpected, f"unexpected answers: {ledger.unexpected[:5]!r:.3000}"
    assert not failures, failures
    assert not any(thread.is_alive() for thread in threads)
    assert ledger.polls and ledger.expired and ledger.v2_tasks

    # The workers drain everything that was accepted.
    wait_for(lambda: not Task.objects.filter(state__in=ACTIVE).exists(), timeout=240, interval=1)
    print(f"{sum(ledger.tasks.values())} tasks terminal {time.monotonic() - started:.1f}s after the writers started")

    # Exactly the tasks the responses announced, and no others.
    for organisation in (first, second):
        assert Task.objects.filter(organisation=organisation).count() == ledger.tasks[organisation.id], organisation.name
    assert Task.objects.count() == sum(ledger.tasks.values())
    assert set(map(str, Task.objects.filter(api_version=2).values_list("id", flat=True))) == ledger.v2_tasks
    # Every v2 task (a logged-in account) published its result.
    status = v2_api.call("POST", "/task-status/", data={"task_ids": ",".join(sorted(ledger.v2_tasks))})
    assert status.pop("success") is True
    assert set(status) == ledger.v2_tasks
    assert {(entry["status"], entry["success"]) for entry in status.values()} == {("Publish complete", True)}, status

    # GET /tasks counts what the database holds, filtered or not.
    for api, organisation in ((apis[0], first), (apis[2], second)):
        tasks = Task.objects.filter(organisation=organisation)
        assert total_count(api) == tasks.count() == ledger.tasks[organisation.id]
        for state in TASK_STATES:
            assert total_count(api, state=state) == tasks.filter(state=state).count(), state
        for kind in ("file", "data", "info", "session.init"):
            assert total_count(api, type=kind) == tasks.filter(type=kind).count(), kind
        assert total_count(api, state="failed", type="file") == tasks.filter(state="failed", type="file").count()
        assert total_count(api, key=api.key.id) == tasks.filter(key=api.key).count()
        assert total_count(api, state="succeeded") + total_count(api, state="failed") == tasks.count()

    # Every poll completed with exactly the tasks its creation listed.
    for poll_id, (organisation_id, _, task_ids) in ledger.polls.items():
        api = apis[0] if organisation_id == first.id else apis[2]
        poll = api.get(f"/polls/{poll_id}")
        assert poll["state"] == "completed", poll
        assert not any(poll[f"tasks_{state}"] for state in ACTIVE), poll
        assert sorted(poll["tasks_succeeded"] + poll["tasks_failed"]) == sorted(task_ids), poll_id
    for api, organisation in ((apis[0], first), (apis[2], second)):
        polls = api.get("/polls", limit=1000)
        assert not polls["has_more"]
        assert polls["total_count"] == sum(1 for org, _, _ in ledger.polls.values() if org == organisation.id)
        assert {poll["state"] for poll in polls["data"]} == {"completed"}

    # An expired session's work failed with session-expired, unless it had already run.
    allowed = {("succeeded", None), ("failed", "session-expired")}
    wrong = []
    for session_id in ledger.expired:
        api = apis[0] if ledger.sessions[session_id] == first.id else apis[2]
        session = api.get(f"/sessions/{session_id}")
        assert session["state"] == "expired"
        listed = api.get("/tasks", session=session_id, limit=1000)
        assert listed["total_count"] == len(listed["data"]) >= 1
        for task in listed["data"]:
            if (task["state"], task["error"]) not in allowed:
                poll = api.get(f"/polls/{task['poll']}") if task["poll"] else {}
                wrong.append({"session": session_id, "expired": session["date_expired"], "task": task["id"],
                              "type": task["type"], "state": task["state"], "error": task["error"],
                              "poll_created": poll.get("date_created"), "started": task["date_started"]})
    assert not wrong, f"{len(wrong)} task(s) of expired sessions ended otherwise: {wrong[:5]}"

    # The relations Postgres does not enforce (the hot tables' foreign keys) hold all the same.
    assert orphans() == {}
