#!/usr/bin/env python
"""How soon a `Ricloud-Await` response follows the state change it waited for.

    DATABASE_URL=postgres://root@127.0.0.1:5432/ricloud_bench python bench/await_latency.py [--requests 30]

Starts the production web server (the Procfile's gunicorn line) and a Celery worker, then
creates sessions with `Ricloud-Await: 10` and measures, for each, the time from the session
init task's completion (its `date_completed`, stamped in the transaction that wakes the waiter)
to the moment the client has the response, and from the Redis notification sent once that change
committed. Target: within 50 ms.
"""
import argparse
import os
import subprocess
import sys
import time
from datetime import timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tasks_list as base  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args()
    database_url = os.environ.get("DATABASE_URL") or base.DEFAULT_DATABASE_URL
    env = {**os.environ, "DATABASE_URL": database_url, "DJANGO_SETTINGS_MODULE": "ricloud_server.settings",
           "DJANGO_DEBUG": "0", "ALLOWED_HOSTS": "*", "LOG_LEVEL": "WARNING"}
    env.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/12")
    env.setdefault("RICLOUD_RATE_LIMIT_ORGANISATION", "1000000/hour")
    os.environ.update(env)
    import django

    django.setup()
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=base.ROOT, env=env, check=True)
    import requests

    from tasks_app.models import Task
    from tasks_app.services.organisations import create_organisation

    _, key = create_organisation(name="Await bench")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "ricloud_server", "worker", "--queues", "tasks", "--concurrency", "2",
         "--without-gossip", "--without-mingle", "--loglevel", "WARNING"],
        cwd=base.ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    port = base.free_port()
    proc, log = base.start_server(env, port)
    url = f"http://127.0.0.1:{port}"
    http = requests.Session()
    http.headers["Authorization"] = f"Token {key.plaintext_token}"
    latencies, totals, after_notice = [], [], []
    import threading

    import redis

    notices = {}
    listener = redis.Redis.from_url(env["CELERY_BROKER_URL"]).pubsub(ignore_subscribe_messages=True)
    listener.psubscribe("ricloud:session:*")

    def listen():
        for message in listener.listen():
            notices.setdefault(message["channel"].decode().rsplit(":", 1)[1], time.time())

    threading.Thread(target=listen, daemon=True).start()
    try:
        base.wait_ready(http, url, proc, log)
        user = http.post(f"{url}/users", json={"identifier": "await"}).json()["id"]
        for i in range(args.requests + 3):
            body = {"source": {"user": user, "type": "mocks.mock", "identifier": f"await-{i}@example.com"},
                    "payload": {"password": "x"}}
            started = time.time()
            response = http.post(f"{url}/sessions", json=body, headers={"Ricloud-Await": "10"})
            received = time.time()
            session = response.json()
            assert session["state"] == "active", session
            done = Task.objects.get(session_id=session["id"]).date_completed.replace(tzinfo=timezone.utc).timestamp()
            if i >= 3:  # warm-up
                latencies.append((received - done) * 1000)
                totals.append((received - started) * 1000)
                after_notice.append((received - notices[session["id"]]) * 1000)
    finally:
        http.close()
        base.stop_server(proc)
        os.killpg(worker.pid, 15)
        worker.wait(15)
    latencies.sort()
    totals.sort()
    after_notice.sort()
    print(f"Ricloud-Await on POST /sessions, {len(latencies)} requests (gunicorn + 1 Celery worker):")
    print(f"state change -> response: p50 {base.percentile(latencies, 50):.1f} ms, "
          f"p95 {base.percentile(latencies, 95):.1f} ms, max {latencies[-1]:.1f} ms (target: within 50 ms)")
    print(f"committed change announced on Redis -> response: p50 {base.percentile(after_notice, 50):.1f} ms, "
          f"p95 {base.percentile(after_notice, 95):.1f} ms, max {after_notice[-1]:.1f} ms")
    print(f"whole request (create, run session.init, answer): p50 {base.percentile(totals, 50):.1f} ms, "
          f"max {totals[-1]:.1f} ms")
    print(f"cpu calibration loop: {base.cpu_calibration():.2f} s (quiet machine: ~0.7 s)")


if __name__ == "__main__":
    main()
