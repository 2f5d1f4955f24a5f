"""What RequestLogMiddleware costs per request (request id, JSON log line, HTTP metrics), in
process: the middleware around a view that does nothing, against the bare view, with
prometheus_client in multiprocess mode (memory-mapped files, as the web runs it) and the log line
written as JSON to /dev/null.

    .venv/bin/python bench/request_overhead.py [N]
"""
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ricloud_server.settings")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="ricloud-bench-metrics-")
os.environ.setdefault("RICLOUD_LOG_FORMAT", "json")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import django  # noqa: E402

django.setup()

import logging  # noqa: E402

from django.http import HttpResponse  # noqa: E402
from django.test import RequestFactory  # noqa: E402
from django.urls import resolve  # noqa: E402

from ricloud_server.requestlog import RequestLogMiddleware  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 20000


def main() -> None:
    devnull = open(os.devnull, "w")
    for handler in logging.getLogger().handlers:
        handler.setStream(devnull)
    factory = RequestFactory()
    requests = []
    for path in ("/tasks/0190a4e8-0000-7000-8000-000000000000", "/polls", "/submit-task/"):
        request = factory.get(path, HTTP_X_REQUEST_ID="bench-1")
        request.resolver_match = resolve(path)
        requests.append(request)

    def view(request):
        return HttpResponse(b"{}", status=200)

    def run(handler) -> float:
        best = []
        for _ in range(5):
            started = time.perf_counter()
            for i in range(N):
                handler(requests[i % 3])
            best.append((time.perf_counter() - started) / N)
        return statistics.median(best)

    wrapped = RequestLogMiddleware(view)
    run(wrapped)  # warm up: metric children, route labels
    bare, full = run(view), run(wrapped)
    logging.getLogger("ricloud.request").setLevel(logging.WARNING)
    quiet = run(wrapped)
    print(f"bare view {bare * 1e6:.1f} µs; with the middleware {full * 1e6:.1f} µs:"
          f" +{(full - bare) * 1e6:.1f} µs per request (of which the JSON line {(full - quiet) * 1e6:.1f} µs)")


if __name__ == "__main__":
    try:
        main()
    finally:
        import shutil

        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
