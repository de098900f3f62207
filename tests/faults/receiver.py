"""A webhook receiver the fault tests script: answer 200 or 500, stall, or be down.

Every request is recorded with its X-Tokenbill-Delivery header (the delivery's idempotency
key: a real receiver deduplicates on it) and what was answered (None: no answer, the sender
gave up or died). It can be stopped and started again on the same port (down, then up).
"""

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OK, FAIL, STALL, SLOW = "ok", "fail", "stall", "slow"


@dataclass
class Request:
    delivery: str  # X-Tokenbill-Delivery
    body: bytes
    answered: int | None = None  # None while stalled or when the sender was gone


class ScriptedReceiver:
    """answers: what to do with the next requests, in order (then `default`). STALL waits until
    `release()` (at most 30 s) and closes without an answer; SLOW answers 200 after
    `slow_seconds`, when the sender may already have given up."""

    def __init__(self, *, default: str = OK, slow_seconds: float = 2.0) -> None:
        self.default, self.slow_seconds = default, slow_seconds
        self.answers: list[str] = []
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.released = threading.Event()
        self.server: ThreadingHTTPServer | None = None
        self.port = 0
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/billing"

    def _next(self) -> str:
        with self.lock:
            return self.answers.pop(0) if self.answers else self.default

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                request = Request(self.headers.get("X-Tokenbill-Delivery", ""), body)
                with receiver.lock:
                    receiver.requests.append(request)
                action = receiver._next()
                if action == STALL:
                    receiver.released.wait(30)
                    self.close_connection = True
                    return
                if action == SLOW:
                    time.sleep(receiver.slow_seconds)
                status = 500 if action == FAIL else 200
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"{}")
                    self.wfile.flush()
                except OSError:
                    return  # the sender is gone: no answer reached it
                request.answered = status

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        """Down: the port refuses connections until start()."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def release(self) -> None:
        self.released.set()

    def received(self) -> list[Request]:
        with self.lock:
            return list(self.requests)

    def delivered(self) -> list[str]:
        """Idempotency keys of the requests answered 200: what a deduplicating receiver processed."""
        return [r.delivery for r in self.received() if r.answered == 200]

    def close(self) -> None:
        self.release()
        self.stop()
