"""Real notification receivers on loopback, for tests and benchmarks (not used in production).

`HookReceiver` is an HTTP server in a thread that records every POST (headers, parsed body,
receipt time) and can be told to answer with an error status, to be slow, or to be down.
`smtp_receiver()` starts an aiosmtpd server (a test dependency) that records messages.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    """One notification as received."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float

    @property
    def status_parameters(self) -> dict[str, Any]:
        return self.body["entry"][0]["resource"]

    def param(self, name: str) -> Any:
        for p in self.status_parameters["parameter"]:
            if p["name"] == name:
                return next((v for k, v in p.items() if k.startswith("value")), p.get("part"))
        return None

    @property
    def kind(self) -> str:
        return str(self.param("type"))

    @property
    def event_numbers(self) -> list[int]:
        return [
            int(part["valueString"])
            for p in self.status_parameters["parameter"] if p["name"] == "notification-event"
            for part in p["part"] if part["name"] == "event-number"
        ]


class HookReceiver:
    """A loopback rest-hook endpoint. Set `status`, `delay` or call `stop()`/`start()`."""

    def __init__(self, port: int = 0) -> None:
        self.received: list[Received] = []
        self.status = 200
        self.delay = 0.0
        self._lock = threading.Lock()
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}/hook"

    def start(self) -> None:
        """(Re)start listening on the same port."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if receiver.delay:
                    time.sleep(receiver.delay)
                status = receiver.status
                if 200 <= status < 300:
                    with receiver._lock:
                        receiver.received.append(Received(
                            self.path, {k: v for k, v in self.headers.items()},
                            json.loads(raw), time.time()))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        self._server.daemon_threads = True
        self._port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Stop listening (connections are refused until `start()`)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def of_kind(self, kind: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.kind == kind]

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> bool:
        """Poll until predicate(self) is true or the timeout passes."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if predicate(self):
                return True
            time.sleep(0.02)
        return bool(predicate(self))


def smtp_receiver(port: int = 0) -> tuple[Any, list[Any]]:
    """Start an aiosmtpd SMTP server on loopback; return (controller, messages list)."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    messages: list[Any] = []

    class Collect(Message):
        def handle_message(self, message: Any) -> None:
            messages.append(message)

    controller = Controller(Collect(), hostname="127.0.0.1", port=port or _free_port())
    controller.start()
    return controller, messages


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
