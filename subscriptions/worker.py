"""The delivery worker: sends handshakes, events (in order, batched) and heartbeats.

Several workers (processes or threads) may share one database. A worker claims one
Subscription at a time by writing a lease (`lease_owner`, `lease_until`); on PostgreSQL the
claim uses `SELECT ... FOR UPDATE SKIP LOCKED`, on SQLite the write transaction is already
exclusive (BEGIN IMMEDIATE). The lease outlives the channel timeout, so a Subscription's
events are only ever sent by one worker, in event-number order. The delivered watermark moves
only after the endpoint accepted a batch: a crash re-sends the batch (at-least-once).
Failures back off exponentially with jitter; when failures last longer than the error window
the Subscription goes to `error` (events keep being counted, heartbeats carry `error`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Connection, and_, delete, func, or_, select, update

from fhir_server.storage.db import Database
from subscriptions import notifications as nb
from subscriptions.channels import DeliveryError, SmtpSettings, deliver
from subscriptions.event_store import (
    ReadableBy,
    SubscriptionState,
    event_rows,
    load_state,
    notification_events,
)
from subscriptions.outbox import now_us
from subscriptions.outbox_schema import delivery, events, registry

log = logging.getLogger("subscriptions.worker")
StatusHook = Callable[[Connection, str, str, str | None], None]
US = 1_000_000


@dataclass
class WorkerConfig:
    """Delivery tuning; every interval is in seconds."""

    base_url: str = "http://127.0.0.1:8080/fhir"
    poll_interval: float = 0.2
    threads: int = 4
    lease_margin: float = 5.0
    error_window: float = 600.0
    backoff_base: float = 1.0
    backoff_max: float = 300.0
    default_max_count: int = 20
    retention_days: float = 30.0
    prune_every: float = 300.0
    smtp: SmtpSettings = field(default_factory=SmtpSettings.from_env)
    readable_by: ReadableBy | None = None
    status_hook: StatusHook | None = None

    @classmethod
    def from_env(cls, **overrides: object) -> WorkerConfig:
        """Config from FHIR_SERVER_* environment variables (overrides win)."""
        env = os.environ.get
        values: dict[str, object] = {
            "base_url": env("FHIR_SERVER_BASE_URL", "http://127.0.0.1:8080/fhir"),
            "poll_interval": float(env("FHIR_SERVER_WORKER_POLL", "0.2")),
            "threads": int(env("FHIR_SERVER_WORKER_THREADS", "4")),
            "error_window": float(env("FHIR_SERVER_SUBSCRIPTION_ERROR_WINDOW", "600")),
            "backoff_base": float(env("FHIR_SERVER_SUBSCRIPTION_BACKOFF_BASE", "1")),
            "backoff_max": float(env("FHIR_SERVER_SUBSCRIPTION_BACKOFF_MAX", "300")),
            "retention_days": float(env("FHIR_SERVER_SUBSCRIPTION_RETENTION_DAYS", "30")),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


def backoff_seconds(attempts: int, cfg: WorkerConfig, rng: random.Random) -> float:
    """Exponential backoff with full jitter in [base*2^(n-1)/2, base*2^(n-1)], capped."""
    ceiling = min(cfg.backoff_max, cfg.backoff_base * (2 ** max(attempts - 1, 0)))
    return ceiling / 2 + rng.random() * ceiling / 2


def _due_condition(now: int):  # type: ignore[no-untyped-def]
    has_events = and_(registry.c.status == "active",
                      delivery.c.delivered_through < registry.c.event_count)
    handshake = and_(registry.c.status == "requested", delivery.c.needs_handshake.is_(True))
    heartbeat = and_(
        registry.c.status.in_(("active", "error")),
        registry.c.heartbeat_period.is_not(None),
        or_(delivery.c.last_sent_at.is_(None),
            delivery.c.last_sent_at + registry.c.heartbeat_period * US <= now),
    )
    return and_(delivery.c.lease_until < now, delivery.c.next_attempt_at <= now,
                or_(handshake, has_events, heartbeat))


def claim(db: Database, worker_id: str, lease_margin: float) -> str | None:
    """Lease one Subscription that has due work; return its id (None when nothing is due).

    The lease lasts twice the Subscription's channel timeout plus `lease_margin` seconds.
    """
    now = now_us()
    with db.write() as conn:
        q = (
            select(delivery.c.sub_id, registry.c.spec)
            .select_from(delivery.join(registry, registry.c.sub_id == delivery.c.sub_id))
            .where(_due_condition(now))
            # least recently served first: round robin, no Subscription starves another
            .order_by(func.coalesce(delivery.c.last_sent_at, 0), delivery.c.sub_id)
            .limit(1)
        )
        if not db.is_sqlite:
            q = q.with_for_update(of=delivery, skip_locked=True)
        row = conn.execute(q).first()
        if row is None:
            return None
        timeout = json.loads(row.spec).get("timeout", 120)
        conn.execute(update(delivery).where(delivery.c.sub_id == row.sub_id).values(
            lease_owner=worker_id, lease_until=now + int((2 * timeout + lease_margin) * US)))
        return str(row.sub_id)


class Worker:
    """One delivery worker process (with `cfg.threads` delivery threads)."""

    def __init__(self, db: Database, cfg: WorkerConfig, worker_id: str | None = None) -> None:
        self.db = db
        self.cfg = cfg
        self.worker_id = worker_id or f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.rng = random.Random()
        self._last_prune = 0.0

    # -- bookkeeping -----------------------------------------------------------------
    def _finish(self, conn: Connection, sub_id: str, **values: object) -> bool:
        res = conn.execute(update(delivery).where(
            delivery.c.sub_id == sub_id, delivery.c.lease_owner == self.worker_id,
        ).values(lease_owner=None, lease_until=0, **values))
        return res.rowcount == 1

    def _set_status(self, conn: Connection, sub_id: str, old: str, new: str,
                    error: str | None) -> None:
        res = conn.execute(update(registry).where(
            registry.c.sub_id == sub_id, registry.c.status == old).values(status=new))
        if res.rowcount and self.cfg.status_hook is not None:
            self.cfg.status_hook(conn, sub_id, new, error)

    # -- one unit of work --------------------------------------------------------------
    def process(self, sub_id: str) -> None:
        """Do the due work of one leased Subscription, then release the lease."""
        prepared: tuple[dict, int] | None = None
        with self.db.read() as conn:
            state = load_state(conn, sub_id)
            if state is None:
                return
            if state.status == "active" and state.delivered_through < state.event_count:
                prepared = self._prepare_events(conn, state)
        if state.status == "requested" and state.needs_handshake:
            self._handshake(state)
        elif prepared is not None:
            self._events(state, *prepared)
        elif state.status == "active" and state.delivered_through < state.event_count:
            with self.db.write() as wconn:  # events pruned or missing: skip, never stall
                self._finish(wconn, sub_id, delivered_through=state.event_count)
        elif state.status in ("active", "error") and state.spec.heartbeat_period:
            self._heartbeat(state)
        else:
            with self.db.write() as wconn:
                self._finish(wconn, sub_id)

    def _send(self, state: SubscriptionState, bundle: dict, kind: str) -> None:
        summary = (f"FHIR Subscription {state.sub_id} ({state.spec.topic_url}): {kind}, "
                   f"{state.event_count} events since start. Retrieve the updated records "
                   f"from {self.cfg.base_url}.")
        deliver(state.spec, bundle, self.cfg.smtp,
                f"FHIR Subscription {state.sub_id}: {kind}", summary)

    def _handshake(self, state: SubscriptionState) -> None:
        info = state.status_info()
        bundle = nb.handshake(nb.StatusInfo(info.subscription_id, info.topic_url, "requested",
                                            state.event_count), self.cfg.base_url,
                              state.spec.content)
        try:
            self._send(state, bundle, "handshake")
        except DeliveryError as exc:
            with self.db.write() as conn:
                if self._finish(conn, state.sub_id, needs_handshake=False, last_error=str(exc),
                                error_code=exc.code, first_failure_at=now_us()):
                    self._set_status(conn, state.sub_id, "requested", "error",
                                     f"handshake failed: {exc}")
            return
        with self.db.write() as conn:
            if self._finish(conn, state.sub_id, needs_handshake=False, last_sent_at=now_us(),
                            attempts=0, first_failure_at=None, last_error=None,
                            error_code=None):
                self._set_status(conn, state.sub_id, "requested", "active", None)

    def _prepare_events(self, conn: Connection,
                        state: SubscriptionState) -> tuple[dict, int] | None:
        limit = state.spec.max_count or self.cfg.default_max_count
        rows = event_rows(conn, state.sub_id, state.delivered_through + 1, None, limit)
        if not rows:
            return None
        evs = notification_events(conn, rows, state, state.spec.content, self.cfg.readable_by)
        info = nb.StatusInfo(state.sub_id, state.spec.topic_url, "active",
                             rows[-1].event_number)
        bundle = nb.event_notification(info, evs, self.cfg.base_url, state.spec.content)
        return bundle, rows[-1].event_number

    def _events(self, state: SubscriptionState, bundle: dict, last_number: int) -> None:
        try:
            self._send(state, bundle, "event-notification")
        except DeliveryError as exc:
            self._failed(state, exc)
            return
        now = now_us()
        with self.db.write() as wconn:
            self._finish(wconn, state.sub_id, delivered_through=last_number,
                         last_sent_at=now, last_delivery_at=now, attempts=0,
                         first_failure_at=None, next_attempt_at=0)

    def _heartbeat(self, state: SubscriptionState) -> None:
        bundle = nb.heartbeat(state.status_info(), self.cfg.base_url, state.spec.content)
        try:
            self._send(state, bundle, "heartbeat")
        except DeliveryError as exc:
            self._failed(state, exc)
            return
        with self.db.write() as wconn:
            values: dict[str, object] = {"last_sent_at": now_us()}
            if state.status == "active":
                values.update(attempts=0, first_failure_at=None, next_attempt_at=0)
            self._finish(wconn, state.sub_id, **values)

    def _failed(self, state: SubscriptionState, exc: DeliveryError) -> None:
        now = now_us()
        attempts = state.attempts + 1
        first = state.first_failure_at or now
        delay = backoff_seconds(attempts, self.cfg, self.rng)
        with self.db.write() as conn:
            if not self._finish(conn, state.sub_id, attempts=attempts, first_failure_at=first,
                                next_attempt_at=now + int(delay * US), last_error=str(exc),
                                error_code=exc.code):
                return
            if state.status == "active" and now - first >= self.cfg.error_window * US:
                self._set_status(conn, state.sub_id, "active", "error", str(exc))
        log.info("delivery to %s failed (%s); attempt %d, retry in %.2fs",
                 state.sub_id, exc, attempts, delay)

    # -- loops -----------------------------------------------------------------------
    def prune(self) -> int:
        """Delete delivered (or no longer deliverable) events older than the retention."""
        cutoff = now_us() - int(self.cfg.retention_days * 86400 * US)
        with self.db.write() as conn:
            done = select(registry.c.sub_id).where(registry.c.status.in_(("error", "off")))
            delivered = select(delivery.c.delivered_through).where(
                delivery.c.sub_id == events.c.sub_id).scalar_subquery()
            res = conn.execute(delete(events).where(
                events.c.occurred_at < cutoff,
                or_(events.c.event_number <= delivered, events.c.sub_id.in_(done))))
            return int(res.rowcount or 0)

    def run_once(self) -> bool:
        """Claim and process one Subscription; False when nothing was due."""
        sub_id = claim(self.db, self.worker_id, self.cfg.lease_margin)
        if sub_id is None:
            return False
        try:
            self.process(sub_id)
        except Exception:
            log.exception("delivery of %s failed unexpectedly", sub_id)
            with self.db.write() as conn:
                self._finish(conn, sub_id, next_attempt_at=now_us() + US)
        return True

    def _thread_loop(self, stop_event: threading.Event) -> None:
        while not stop_event.is_set():
            try:
                busy = self.run_once()
            except Exception:
                log.exception("worker loop error")
                busy = False
            if not busy:
                stop_event.wait(self.cfg.poll_interval)

    def run(self, stop_event: threading.Event) -> None:
        """Run `cfg.threads` delivery threads until `stop_event` is set."""
        threads = [threading.Thread(target=self._thread_loop, args=(stop_event,), daemon=True,
                                    name=f"sub-worker-{i}") for i in range(self.cfg.threads)]
        for t in threads:
            t.start()
        while not stop_event.wait(min(self.cfg.prune_every, 1.0)):
            if time.monotonic() - self._last_prune >= self.cfg.prune_every:
                self._last_prune = time.monotonic()
                try:
                    self.prune()
                except Exception:
                    log.exception("pruning failed")
        for t in threads:
            t.join()


def run_worker(database_url: str, *, stop_event: threading.Event,
               poll_interval: float = 0.2, config: WorkerConfig | None = None) -> None:
    """Run a delivery worker against `database_url` until `stop_event` is set."""
    cfg = config or WorkerConfig.from_env()
    cfg.poll_interval = poll_interval
    db = Database(database_url)
    try:
        Worker(db, cfg).run(stop_event)
    finally:
        db.dispose()


def main(argv: list[str] | None = None) -> None:
    """CLI: `python -m subscriptions.worker [--database-url URL] [--poll-interval S]`."""
    from fhir_server.config import Settings

    parser = argparse.ArgumentParser(description="FHIR Subscription delivery worker")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--poll-interval", type=float, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--error-window", type=float, default=None)
    parser.add_argument("--backoff-base", type=float, default=None)
    parser.add_argument("--lease-margin", type=float, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("FHIR_SERVER_LOG_LEVEL", "INFO"))
    settings = Settings.from_env()
    overrides: dict[str, object] = {"base_url": settings.base_url}
    for key in ("threads", "error_window", "backoff_base", "lease_margin"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    cfg = WorkerConfig.from_env(**overrides)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    run_worker(args.database_url or settings.database_url, stop_event=stop,
               poll_interval=args.poll_interval or cfg.poll_interval, config=cfg)


if __name__ == "__main__":
    main()
