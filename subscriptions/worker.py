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

One coordinator thread per worker does all database access: each cycle, in ONE write
transaction, it stores the outcomes of finished sends (releasing their leases, one statement
per set of columns) and claims the due Subscriptions (up to `max_inflight` leased at a time);
then, in ONE read transaction, it reads the claimed Subscriptions' states and undelivered
events (two statements, whatever their number) and builds the notifications. A pool of
`threads` senders only posts them (keep-alive connections, see channels.py). Cycles run at
most every `batch_window` (20 ms), so outcomes and claims gather into few transactions. A
cheap read query decides whether anything is due before a write transaction is opened; an
idle worker polls less and less often (from `poll_interval` up to `idle_poll`), and on
PostgreSQL a NOTIFY from the write path wakes it at once (wakeup.py).
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
    claim_in,
    prune_events,
    release,
    release_many,
    renew_leases,
    set_status,
)
from subscriptions.event_store import (
    ReadableBy,
    SubscriptionState,
    event_rows,
    load_states,
    notification_events,
    undelivered_rows,
)
from subscriptions.outbox_store import now_us
from subscriptions.wakeup import Listener

log = logging.getLogger("subscriptions.worker")
StatusHook = Callable[[Connection, str, str, str | None], None]


@dataclass
class WorkerConfig:
    """Delivery tuning; every interval is in seconds."""

    base_url: str = "http://127.0.0.1:8080/fhir"
    poll_interval: float = 0.05  # while busy; doubled per idle poll up to idle_poll
    idle_poll: float = 0.5  # the slowest poll (PostgreSQL also wakes on NOTIFY at once)
    listen: bool = True  # PostgreSQL: LISTEN for new work (wakeup.py)
    batch_window: float = 0.02  # cycles at most this often: outcomes and claims are batched
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
            "idle_poll": settings.worker_idle_poll,
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

    def store(self, conn: Connection, outcomes: list[Outcome]) -> None:
        """Store outcomes and release their leases: plain ones in one statement per set of
        columns, status changes one by one (in sub_id order, as writers lock registry rows:
        no deadlock)."""
        plain = [o for o in outcomes if not o.gone and o.status_change is None]
        release_many(conn, self.worker_id, [(o.sub_id, o.values) for o in plain])
        for outcome in sorted(outcomes, key=lambda o: o.sub_id):
            if outcome.status_change is not None:
                self.apply(conn, outcome)

    # -- planning (read transaction) ---------------------------------------------------
    def _limit(self, state: SubscriptionState) -> int:
        return state.spec.max_count or self.cfg.default_max_count

    def plan_all(self, conn: Connection, sub_ids: list[str]) -> list[Job | Outcome]:
        """The due work of leased Subscriptions: their states in one statement, the events
        of those with a backlog in another."""
        states = load_states(conn, sub_ids)
        found = {state.sub_id for state in states}
        backlog = {state.sub_id: self._limit(state) for state in states
                   if state.status == "active" and state.delivered_through < state.event_count}
        rows = undelivered_rows(conn, backlog)
        planned: list[Job | Outcome] = [Outcome(sid, gone=True) for sid in sub_ids
                                        if sid not in found]
        planned.extend(self.plan(conn, state, rows.get(state.sub_id)) for state in states)
        return planned

    def plan(self, conn: Connection, state: SubscriptionState,
             rows: list[Any] | None = None) -> Job | Outcome:
        """The due work of one leased Subscription: a notification to send, or an outcome
        that only releases the lease. `rows`: its next undelivered events, when read."""
        content = state.spec.content
        if state.status == "requested" and state.needs_handshake:
            info = state.status_info()
            bundle = nb.handshake(nb.StatusInfo(info.subscription_id, info.topic_url,
                                                "requested", state.event_count),
                                  self.cfg.base_url, content)
            return Job(state, "handshake", bundle)
        if state.status == "active" and state.delivered_through < state.event_count:
            if not rows:  # none right after the watermark: the next retained ones
                rows = event_rows(conn, state.sub_id, state.delivered_through + 1, None,
                                  self._limit(state))
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
    def dispatch(self, pool: ThreadPoolExecutor, sub_ids: list[str]) -> None:
        """Plan the claimed Subscriptions (one read transaction) and hand their
        notifications to the senders; outcomes that need no send are stored next cycle."""
        try:
            with self.db.read() as conn:
                planned = self.plan_all(conn, sub_ids)
        except Exception:
            log.exception("planning deliveries failed")
            planned = [Outcome(sid, {"next_attempt_at": now_us() + US}) for sid in sub_ids]
        for item in planned:
            if isinstance(item, Job):
                pool.submit(self._send_job, item)
            else:
                self._done.put(item)

    def send_checked(self, job: Job) -> Outcome:
        """Send one planned notification if our lease surely holds; never raises."""
        sub_id = job.state.sub_id
        try:
            if not self.lease_is_safe(sub_id):
                log.warning("lease on %s may have expired: not sending", sub_id)
                return Outcome(sub_id)
            return self.send(job)
        except Exception:
            log.exception("delivery of %s failed unexpectedly", sub_id)
            return Outcome(sub_id, {"next_attempt_at": now_us() + US})

    def lease_is_safe(self, sub_id: str) -> bool:
        """Whether our lease on `sub_id` surely still holds (a sixth of the lease, 1 s by
        default, of slack for the time the send takes to start)."""
        start = max(self._claimed_at.get(sub_id, 0.0), self._renewed_at)
        return time.monotonic() < start + self.cfg.lease_seconds * 5 / 6

    def _send_job(self, job: Job) -> None:
        self._done.put(self.send_checked(job))
        self._wake.set()

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
            self.store(conn, done)
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
        if claimed:
            self.dispatch(pool, claimed)
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
        if self.cfg.listen and not self.db.is_sqlite:
            Listener(self.db, self._wake.set, stop_event).start()
        pause = self.cfg.poll_interval
        last_cycle = -float("inf")
        try:
            while not stop_event.is_set():
                gap = self.cfg.batch_window - (time.monotonic() - last_cycle)
                if gap > 0 and stop_event.wait(gap):  # let finished sends and events gather
                    break
                last_cycle = time.monotonic()
                self._wake.clear()
                try:
                    busy = self.cycle(pool)
                except Exception:
                    log.exception("worker loop error")
                    busy = False
                    stop_event.wait(self.cfg.poll_interval)
                self._maybe_prune()
                if busy:
                    pause = self.cfg.poll_interval
                elif self._wake.wait(pause):  # a send finished, or NOTIFY: new work
                    pause = self.cfg.poll_interval
                else:  # idle: poll less and less often
                    pause = min(pause * 2, max(self.cfg.idle_poll, self.cfg.poll_interval))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            self._drain()
            stored = {o.sub_id for o in self._pending}
            # claimed but never started: release the lease untouched (no wait for expiry)
            self._pending.extend(Outcome(sid) for sid in self._inflight - stored)
            if self._pending:
                try:
                    with self.db.write() as conn:
                        self.store(conn, self._pending)
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
