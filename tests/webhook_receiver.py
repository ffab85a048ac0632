"""A real HTTP server on a loopback port that records webhook requests and can be told to fail.

It stands in for the webhook gateway (built in parallel) at the gateway's edge: it checks a
bearer token or a Standard Webhooks signature when given one (with the reference library, not
the Function App's own code), and counts one event per Idempotency-Key, as the gateway derives
one Prefect event per key.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

from devstack.supervision.processes import free_port


@dataclass(frozen=True)
class Received:
    """One request as it arrived, and the status it was answered with (None: connection dropped)."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int | None

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    """Records every request; answers 204, or fails the next requests as told."""

    def __init__(self, token: str = "", secret: str = "") -> None:
        self.token = token
        self.verifier = Webhook(secret) if secret else None
        self.requests: list[Received] = []
        self._failures: list[tuple[int | None, str | None]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.port = free_port()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> WebhookReceiver:
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="webhook-receiver",
            daemon=True,
        ).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def fail_next(self, count: int, status: int = 503, retry_after: str | None = None) -> None:
        """Answer the next `count` requests with `status` (and a Retry-After header when given)."""
        with self._lock:
            self._failures.extend([(status, retry_after)] * count)

    def drop_next(self, count: int) -> None:
        """Close the connection of the next `count` requests without answering, like a crashed server."""
        with self._lock:
            self._failures.extend([(None, None)] * count)

    def to(self, path: str) -> list[Received]:
        """Every request to `path`, in arrival order, answered or not."""
        with self._lock:
            return [request for request in self.requests if request.path == path]

    def events(self, path: str) -> list[Received]:
        """Accepted requests to `path`, one per Idempotency-Key: what the gateway turns into events."""
        seen: dict[str, Received] = {}
        for request in self.to(path):
            if request.status == 204:
                seen.setdefault(request.headers.get("idempotency-key", str(id(request))), request)
        return list(seen.values())

    def _answer(self, headers: dict[str, str], body: bytes) -> tuple[int | None, str | None]:
        with self._lock:
            if self._failures:
                return self._failures.pop(0)
        if self.token and headers.get("authorization") != f"Bearer {self.token}":
            return 401, None
        if self.verifier:
            try:
                self.verifier.verify(body, headers)
            except WebhookVerificationError:
                return 401, None
        return 204, None


def _handler(receiver: WebhookReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            headers = {name.lower(): value for name, value in self.headers.items()}
            status, retry_after = receiver._answer(headers, body)
            with receiver._lock:
                receiver.requests.append(Received(self.path, headers, body, status))
            if status is None:
                self.close_connection = True
                return
            self.send_response(status)
            if retry_after is not None:
                self.send_header("Retry-After", retry_after)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler
