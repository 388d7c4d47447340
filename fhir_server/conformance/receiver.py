"""The kit's own rest-hook endpoint: an HTTP server on loopback (or `--listen`) that records
every notification the server under test sends."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Notification:
    path: str
    headers: dict[str, str]
    text: str
    at: float

    @property
    def bundle(self) -> dict[str, Any] | None:
        try:
            body = json.loads(self.text)
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    @property
    def status(self) -> dict[str, Any] | None:
        """The SubscriptionStatus (R4: Parameters) of the first entry."""
        bundle = self.bundle or {}
        entries = bundle.get("entry") or []
        first = entries[0].get("resource") if entries and isinstance(entries[0], dict) else None
        return first if isinstance(first, dict) else None

    def param(self, name: str) -> Any:
        """First value of a SubscriptionStatus parameter (`part` list for tuples)."""
        for p in (self.status or {}).get("parameter") or []:
            if p.get("name") == name:
                for key, value in p.items():
                    if key.startswith("value"):
                        return value
                return p.get("part")
        return None

    def params(self, name: str) -> list[dict[str, Any]]:
        return [p for p in (self.status or {}).get("parameter") or [] if p.get("name") == name]

    @property
    def kind(self) -> str:
        return str(self.param("type") or "")

    @property
    def subscription(self) -> str:
        ref = self.param("subscription")
        return ref.get("reference", "") if isinstance(ref, dict) else str(ref or "")


class Receiver:
    """Records POSTs; `wait_for` polls the record until a predicate holds."""

    def __init__(self, listen: str = "127.0.0.1:0", callback_url: str = "") -> None:
        host, _, port = listen.rpartition(":")
        self.received: list[Notification] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                text = self.rfile.read(length).decode("utf-8", "replace")
                with receiver._lock:
                    receiver.received.append(Notification(
                        self.path, dict(self.headers.items()), text, time.time()))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer((host or "127.0.0.1", int(port or 0)), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        bound = self.server.server_address
        self.url = (callback_url.rstrip("/") if callback_url else
                    f"http://{bound[0]}:{bound[1]}") + "/notify"

    def for_subscription(self, sub_id: str) -> list[Notification]:
        with self._lock:
            items = list(self.received)
        return [n for n in items if n.subscription.rstrip("/").endswith(f"Subscription/{sub_id}")]

    def wait_for(self, predicate: Callable[[list[Notification]], Any],
                 timeout: float) -> Any:
        """Poll until `predicate(received)` is truthy; returns its value or None."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                items = list(self.received)
            value = predicate(items)
            if value or time.monotonic() > deadline:
                return value
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
