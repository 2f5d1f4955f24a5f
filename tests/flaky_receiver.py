"""A webhook receiver that fails each path's first requests: `FlakyReceiver(failures=[503, 502])`
answers 503 then 502 then 200 to every path, counting requests per path; `hold_first` seconds
before answering a path's first request (time to kill the sender mid-attempt)."""
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FlakyReceiver:
    def __init__(self, failures=(503,), hold_first: float = 0):
        self.failures = list(failures)
        self.hold_first = hold_first
        self.requests = defaultdict(list)  # path -> [status answered, …]
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    seen = receiver.requests[self.path]
                    status = receiver.failures[len(seen)] if len(seen) < len(receiver.failures) else 200
                    seen.append(status)
                if len(seen) == 1 and receiver.hold_first:
                    time.sleep(receiver.hold_first)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/webhooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answered(self, event_id) -> list:
        with self.lock:
            return list(self.requests.get(f"/webhooks/{event_id}", []))

    def close(self):
        self.server.shutdown()
        self.server.server_close()
