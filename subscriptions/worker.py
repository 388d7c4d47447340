"""The delivery worker: sends handshakes, events (in order, batched) and heartbeats.

Several workers (processes) may share one database. A worker leases due Subscriptions by
writing `lease_owner` / `lease_until`; on PostgreSQL the claim uses
`SELECT ... FOR UPDATE SKIP LOCKED`, on SQLite the write transaction is already exclusive
(BEGIN IMMEDIATE). Leases are short (`lease_seconds`, 6 s by default) and heartbeated: while
a worker holds Subscriptions it extends all its leases every third of that, so a slow
endpoint keeps its worker, and a killed worker's Subscriptions are free for another worker
(or its restart) at most `lease_seconds` after its last heartbeat. A sender never starts a
send on a lease it cannot be sure of, so a Subscription's events are only ever sent by one
worker, in event-number order. The delivered watermark moves only after the endpoint
accepted a batch: a crash re-sends only the batch that was in flight (at-least-once).
Failures back off exponentially with jitter; when failures last longer than the error
window the Subscription goes to `error` (events keep being counted, heartbeats carry `error`).

One coordinator thread per worker does all database writes: each cycle, in ONE write
transaction, it stores the outcomes of finished sends (releasing their leases) and claims the
due Subscriptions (up to `max_inflight` leased at a time), then hands them to a pool of
`threads` senders. A sender reads the Subscription's state and events in its own read
transaction, builds the bundle and posts it (keep-alive connections, see channels.py). A
cheap read query decides whether anything is due before a write transaction is opened, so an
idle worker polls every `poll_interval` without taking the SQLite writer lock.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fhir_server.config import Settings
from fhir_server.storage.db import Connection, Database
from subscriptions import notifications as nb
from subscriptions.channels import DeliveryError, SmtpSettings, deliver, email_text
from subscriptions.delivery_store import (
    US,
    anything_due,
    claim,
    claim_in,
    prune_events,
    release,
    renew_leases,
    set_status,
)
from subscriptions.event_store import (
    ReadableBy,
    SubscriptionState,
    event_rows,
    load_state,
    notification_events,
)
from subscriptions.outbox_store import now_us

log = logging.getLogger("subscriptions.worker")
StatusHook = Callable[[Connection, str, str, str | None], None]


@dataclass
class WorkerConfig:
    """Delivery tuning; every interval is in seconds."""

    base_url: str = "http://127.0.0.1:8080/fhir"
    poll_interval: float = 0.05
    threads: int = 8
    max_inflight: int = 64  # leased and not yet stored, queued for or in the senders
    lease_seconds: float = 6.0  # renewed every third of it while held
    error_window: float = 600.0
    backoff_base: float = 1.0
    backoff_max: float = 300.0
    default_max_count: int = 20
    retention_days: float = 30.0
    prune_every: float = 300.0
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    readable_by: ReadableBy | None = None
    status_hook: StatusHook | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: object) -> WorkerConfig:
        """Config from the server's settings (fhir_server/config.py); overrides win."""
        values: dict[str, object] = {
            "base_url": settings.base_url or "http://127.0.0.1:8080/fhir",
            "poll_interval": settings.worker_poll,
            "threads": settings.worker_threads,
            "max_inflight": settings.worker_max_inflight,
            "lease_seconds": settings.worker_lease_seconds,
            "error_window": settings.subscription_error_window,
            "backoff_base": settings.subscription_backoff_base,
            "backoff_max": settings.subscription_backoff_max,
            "retention_days": settings.subscription_retention_days,
            "smtp": SmtpSettings(settings.smtp_host, settings.smtp_port, settings.smtp_from),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


def backoff_seconds(attempts: int, cfg: WorkerConfig, rng: random.Random) -> float:
    """Exponential backoff with full jitter in [base*2^(n-1)/2, base*2^(n-1)], capped."""
    ceiling = min(cfg.backoff_max, cfg.backoff_base * (2 ** max(attempts - 1, 0)))
    return ceiling / 2 + rng.random() * ceiling / 2


@dataclass
class Outcome:
    """What a unit of work decided for one leased Subscription: the delivery-row values to
    store when the lease is released, and an optional status change (old, new, error)."""

    sub_id: str
    values: dict[str, object] = field(default_factory=dict)
    status_change: tuple[str, str, str | None] | None = None
    gone: bool = False  # the Subscription was deleted meanwhile: nothing to store


@dataclass
class Job:
    """A notification ready to send for one leased Subscription."""

    state: SubscriptionState
    kind: str  # handshake | event-notification | heartbeat
    bundle: dict[str, Any]
    last_number: int = 0


class Worker:
    """One delivery worker: a coordinator (all database writes) and `cfg.threads` senders."""

    def __init__(self, db: Database, cfg: WorkerConfig, worker_id: str | None = None) -> None:
        self.db = db
        self.cfg = cfg
        self.worker_id = worker_id or f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.rng = random.Random()
        self._last_prune = -float(cfg.prune_every)  # prune once at start
        self._done: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self._pending: list[Outcome] = []  # outcomes not yet stored
        self._inflight: set[str] = set()  # leased by this worker, outcome not yet stored
        self._wake = threading.Event()
        # monotonic times: when each lease was taken, when all were last extended
        self._claimed_at: dict[str, float] = {}
        self._renewed_at = 0.0

    # -- bookkeeping -----------------------------------------------------------------
    def _finish(self, conn: Connection, sub_id: str, **values: object) -> bool:
        return release(conn, sub_id, self.worker_id, values)

    def _set_status(self, conn: Connection, sub_id: str, old: str, new: str,
                    error: str | None) -> None:
        if set_status(conn, sub_id, old, new) and self.cfg.status_hook is not None:
            self.cfg.status_hook(conn, sub_id, new, error)

    def apply(self, conn: Connection, outcome: Outcome) -> None:
        """Store an outcome and release the lease (no-op when the lease is no longer ours).

        A status change (and its hook) runs in a savepoint: if it fails, the lease is
        released with a retry in one second instead, as if the attempt had not happened.
        """
        if outcome.gone:
            return
        if outcome.status_change is None:
            self._finish(conn, outcome.sub_id, **outcome.values)
            return
        try:
            with conn.begin_nested():
                if self._finish(conn, outcome.sub_id, **outcome.values):
                    self._set_status(conn, outcome.sub_id, *outcome.status_change)
        except Exception:
            log.exception("storing the outcome for %s failed", outcome.sub_id)
            self._finish(conn, outcome.sub_id, next_attempt_at=now_us() + US)

    # -- planning (read transaction) ---------------------------------------------------
    def plan(self, conn: Connection, state: SubscriptionState) -> Job | Outcome:
        """The due work of one leased Subscription: a notification to send, or an outcome
        that only releases the lease."""
        content = state.spec.content
        if state.status == "requested" and state.needs_handshake:
            info = state.status_info()
            bundle = nb.handshake(nb.StatusInfo(info.subscription_id, info.topic_url,
                                                "requested", state.event_count),
                                  self.cfg.base_url, content)
            return Job(state, "handshake", bundle)
        if state.status == "active" and state.delivered_through < state.event_count:
            limit = state.spec.max_count or self.cfg.default_max_count
            rows = event_rows(conn, state.sub_id, state.delivered_through + 1, None, limit)
            if not rows:  # events pruned or missing: skip, never stall
                return Outcome(state.sub_id, {"delivered_through": state.event_count})
            evs = notification_events(conn, rows, state, content, self.cfg.readable_by)
            info = nb.StatusInfo(state.sub_id, state.spec.topic_url, "active",
                                 rows[-1].event_number)
            bundle = nb.event_notification(info, evs, self.cfg.base_url, content)
            return Job(state, "event-notification", bundle, rows[-1].event_number)
        if state.status in ("active", "error") and state.spec.heartbeat_period:
            bundle = nb.heartbeat(state.status_info(), self.cfg.base_url, content)
            return Job(state, "heartbeat", bundle)
        return Outcome(state.sub_id)

    # -- sending (delivery threads; no database access) ----------------------------------
    def _send(self, state: SubscriptionState, bundle: dict, kind: str) -> None:
        subject, summary = email_text(state.sub_id, state.spec, kind, state.event_count,
                                      self.cfg.base_url)
        deliver(state.spec, bundle, self.cfg.smtp, subject, summary)

    def send(self, job: Job) -> Outcome:
        """Send one notification; return what to store for it."""
        state = job.state
        try:
            self._send(state, job.bundle, job.kind)
        except DeliveryError as exc:
            if job.kind == "handshake":
                return Outcome(state.sub_id, {
                    "needs_handshake": False, "last_error": str(exc), "error_code": exc.code,
                    "first_failure_at": now_us()}, ("requested", "error",
                                                    f"handshake failed: {exc}"))
            return self._failure(state, exc)
        now = now_us()
        if job.kind == "handshake":
            return Outcome(state.sub_id, {
                "needs_handshake": False, "last_sent_at": now, "attempts": 0,
                "first_failure_at": None, "last_error": None, "error_code": None},
                ("requested", "active", None))
        if job.kind == "event-notification":
            return Outcome(state.sub_id, {
                "delivered_through": job.last_number, "last_sent_at": now,
                "last_delivery_at": now, "attempts": 0, "first_failure_at": None,
                "next_attempt_at": 0})
        values: dict[str, object] = {"last_sent_at": now}
        if state.status == "active":
            values.update(attempts=0, first_failure_at=None, next_attempt_at=0)
        return Outcome(state.sub_id, values)

    def _failure(self, state: SubscriptionState, exc: DeliveryError) -> Outcome:
        now = now_us()
        attempts = state.attempts + 1
        first = state.first_failure_at or now
        delay = backoff_seconds(attempts, self.cfg, self.rng)
        change = None
        if state.status == "active" and now - first >= self.cfg.error_window * US:
            change = ("active", "error", str(exc))
        log.info("delivery to %s failed (%s); attempt %d, retry in %.2fs",
                 state.sub_id, exc, attempts, delay)
        return Outcome(state.sub_id, {
            "attempts": attempts, "first_failure_at": first,
            "next_attempt_at": now + int(delay * US), "last_error": str(exc),
            "error_code": exc.code}, change)

    # -- one unit of work ----------------------------------------------------------------
    def work(self, sub_id: str) -> Outcome:
        """Plan (read transaction) and send the due work of one leased Subscription; return
        what to store when its lease is released. Never raises."""
        try:
            with self.db.read() as conn:
                state = load_state(conn, sub_id)
                if state is None:
                    return Outcome(sub_id, gone=True)
                planned = self.plan(conn, state)
            if isinstance(planned, Job) and not self.lease_is_safe(sub_id):
                log.warning("lease on %s may have expired: not sending", sub_id)
                return Outcome(sub_id)
            return self.send(planned) if isinstance(planned, Job) else planned
        except Exception:
            log.exception("delivery of %s failed unexpectedly", sub_id)
            return Outcome(sub_id, {"next_attempt_at": now_us() + US})

    def lease_is_safe(self, sub_id: str) -> bool:
        """Whether our lease on `sub_id` surely still holds (a sixth of the lease, 1 s by
        default, of slack for the time the send takes to start)."""
        start = max(self._claimed_at.get(sub_id, 0.0), self._renewed_at)
        return time.monotonic() < start + self.cfg.lease_seconds * 5 / 6

    def _work_job(self, sub_id: str) -> None:
        self._done.put(self.work(sub_id))
        self._wake.set()

    def process(self, sub_id: str) -> None:
        """Do the due work of one leased Subscription in this thread, then release it."""
        outcome = self.work(sub_id)
        with self.db.write() as conn:
            self.apply(conn, outcome)

    def run_once(self) -> bool:
        """Claim and process one Subscription synchronously; False when nothing was due."""
        taken = time.monotonic()
        sub_id = claim(self.db, self.worker_id, self.cfg.lease_seconds)
        if sub_id is None:
            return False
        self._claimed_at[sub_id] = taken
        self.process(sub_id)
        self._claimed_at.pop(sub_id, None)
        return True

    # -- the coordinator -----------------------------------------------------------------
    def _drain(self) -> None:
        while True:
            try:
                self._pending.append(self._done.get_nowait())
            except queue.Empty:
                return

    def cycle(self, pool: ThreadPoolExecutor) -> bool:
        """Store finished outcomes, heartbeat our leases when due and claim due work in one
        write transaction, then hand the claimed Subscriptions to `pool`. Returns whether
        anything happened."""
        self._drain()
        free = self.cfg.max_inflight - len(self._inflight)
        busy_ids = self._inflight - {o.sub_id for o in self._pending}
        started = time.monotonic()
        heartbeat = bool(busy_ids) and (
            started - self._renewed_at >= self.cfg.lease_seconds / 3)
        if not self._pending and not heartbeat:
            if free <= 0:
                return False
            with self.db.read() as conn:
                if not anything_due(conn, busy_ids):
                    return False
        done = self._pending
        with self.db.write() as conn:
            if heartbeat:
                renew_leases(conn, self.worker_id, self.cfg.lease_seconds)
            # registry rows (status changes) in sub_id order, as writers lock them: no deadlock
            for outcome in sorted(done, key=lambda o: o.sub_id):
                self.apply(conn, outcome)
            claimed = claim_in(conn, self.worker_id, self.cfg.lease_seconds, free, busy_ids,
                               skip_locked=not self.db.is_sqlite) if free > 0 else []
        if heartbeat:
            self._renewed_at = started
        self._pending = []
        for outcome in done:
            self._inflight.discard(outcome.sub_id)
            self._claimed_at.pop(outcome.sub_id, None)
        for sub_id in claimed:
            self._claimed_at[sub_id] = started
        self._inflight.update(claimed)
        for sub_id in claimed:
            pool.submit(self._work_job, sub_id)
        return True

    # -- loops -----------------------------------------------------------------------
    def prune(self) -> int:
        """Delete delivered (or no longer deliverable) events older than the retention."""
        cutoff = now_us() - int(self.cfg.retention_days * 86400 * US)
        with self.db.write() as conn:
            return prune_events(conn, cutoff)

    def _maybe_prune(self) -> None:
        if time.monotonic() - self._last_prune < self.cfg.prune_every:
            return
        self._last_prune = time.monotonic()
        try:
            self.prune()
        except Exception:
            log.exception("pruning failed")

    def run(self, stop_event: threading.Event) -> None:
        """Deliver with `cfg.threads` sender threads until `stop_event` is set."""
        pool = ThreadPoolExecutor(max_workers=max(self.cfg.threads, 1),
                                  thread_name_prefix="sub-worker")
        try:
            while not stop_event.is_set():
                self._wake.clear()
                try:
                    busy = self.cycle(pool)
                except Exception:
                    log.exception("worker loop error")
                    busy = False
                    stop_event.wait(self.cfg.poll_interval)
                self._maybe_prune()
                if not busy:
                    self._wake.wait(self.cfg.poll_interval)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            self._drain()
            stored = {o.sub_id for o in self._pending}
            # claimed but never started: release the lease untouched (no wait for expiry)
            self._pending.extend(Outcome(sid) for sid in self._inflight - stored)
            if self._pending:
                try:
                    with self.db.write() as conn:
                        for outcome in sorted(self._pending, key=lambda o: o.sub_id):
                            self.apply(conn, outcome)
                except Exception:
                    log.exception("storing the last outcomes failed (leases will expire)")


def run_worker(database_url: str, *, stop_event: threading.Event,
               poll_interval: float | None = None, config: WorkerConfig | None = None) -> None:
    """Run a delivery worker against `database_url` until `stop_event` is set."""
    cfg = config or WorkerConfig.from_settings(Settings.from_env())
    if poll_interval is not None:
        cfg.poll_interval = poll_interval
    db = Database(database_url)
    try:
        Worker(db, cfg).run(stop_event)
    finally:
        db.dispose()


def main(argv: list[str] | None = None) -> None:
    """CLI: `python -m subscriptions.worker [--database-url URL] [--poll-interval S]`."""
    parser = argparse.ArgumentParser(description="FHIR Subscription delivery worker")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--poll-interval", type=float, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--error-window", type=float, default=None)
    parser.add_argument("--backoff-base", type=float, default=None)
    parser.add_argument("--lease-seconds", type=float, default=None)
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    logging.basicConfig(level=settings.log_level)
    overrides: dict[str, object] = {}
    for key in ("threads", "error_window", "backoff_base", "lease_seconds"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    cfg = WorkerConfig.from_settings(settings, **overrides)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    run_worker(args.database_url or settings.database_url, stop_event=stop,
               poll_interval=args.poll_interval or cfg.poll_interval, config=cfg)


if __name__ == "__main__":
    main()
