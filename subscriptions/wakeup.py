"""Waking the delivery worker when there is new work, instead of polling fast.

On PostgreSQL the write path raises a NOTIFY on `CHANNEL` in the transaction that records
events (it rides on the event-counter UPDATE, see outbox_store: no extra round trip) or
creates a Subscription that needs a handshake; PostgreSQL delivers it at commit. A
`Listener` thread in the worker LISTENs on its own connection and wakes the coordinator.
On SQLite there is no such signal: the worker polls, backing off while idle (worker.py).
Either way the worker also polls slowly as a safety net (retries, heartbeats, a dead
worker's leases are due by time, not by a write).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from fhir_server.storage.db import Database

log = logging.getLogger("subscriptions.wakeup")
CHANNEL = "fhir_subscription_events"


class Listener:
    """LISTENs on `CHANNEL` on a dedicated autocommit connection and calls `on_notify` for
    each batch of notifications; reconnects after errors. PostgreSQL only."""

    def __init__(self, db: Database, on_notify: Callable[[], None],
                 stop: threading.Event, *, retry_seconds: float = 1.0) -> None:
        self.engine = db.engine
        self.on_notify = on_notify
        self.stop = stop
        self.retry_seconds = retry_seconds
        self.listening = threading.Event()  # set while LISTEN is in effect
        self.thread = threading.Thread(target=self._run, name="sub-listener", daemon=True)

    def start(self) -> Listener:
        self.thread.start()
        return self

    def _connect(self):  # type: ignore[no-untyped-def]
        import psycopg

        args, kwargs = self.engine.dialect.create_connect_args(self.engine.url)
        conn = psycopg.connect(*args, **dict(kwargs, autocommit=True))
        conn.execute(f"LISTEN {CHANNEL}")
        return conn

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                with self._connect() as conn:
                    self.listening.set()
                    self.on_notify()  # anything written while we were not listening
                    while not self.stop.is_set():
                        for _note in conn.notifies(timeout=1.0):  # then check `stop`
                            self.on_notify()
            except Exception:
                log.warning("LISTEN %s failed; retrying in %.1fs", CHANNEL, self.retry_seconds,
                            exc_info=True)
            self.listening.clear()
            self.stop.wait(self.retry_seconds)
