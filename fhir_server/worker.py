"""`python -m fhir_server worker`: Subscription delivery, the stalled-referral sweep and the
patient reminders."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from typing import Any

from fhir_server.config import Settings

log = logging.getLogger("fhir_server.worker")
REMINDER_INTERVAL = 60.0  # seconds between passes over the patient reminder queue


def register_cli(sub: argparse._SubParsersAction) -> None:
    """Add `worker [--sweep-interval S]`."""
    worker = sub.add_parser("worker", help="deliver Subscription notifications, run the "
                                           "stalled-referral sweep and send patient "
                                           "reminders")
    worker.add_argument("--sweep-interval", type=float, default=300.0,
                        help="seconds between stalled-referral sweeps (default 300)")
    worker.set_defaults(handler=lambda settings, args: run(
        settings, sweep_interval=args.sweep_interval))


def run(settings: Settings, *, sweep_interval: float, stop: threading.Event | None = None,
        overrides: dict[str, Any] | None = None) -> int:
    """Run until SIGTERM/SIGINT (or `stop`): delivery threads and a periodic sweep.

    `overrides` replace WorkerConfig fields (tests and benchmarks tune intervals with it).
    """
    from fhir_server.jobs import audit_retention_sweep, stalled_sweep, subscription_status_hook
    from fhir_server.reminders.sender import ReminderSender
    from fhir_server.wiring import build_services
    from subscriptions.worker import Worker, WorkerConfig

    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    services = build_services(settings)
    values: dict[str, Any] = {"status_hook": subscription_status_hook,
                              "readable_by": services.readable_by}
    values.update(overrides or {})
    cfg = WorkerConfig.from_settings(settings, **values)
    delivery = threading.Thread(target=Worker(services.db, cfg).run, args=(stop,),
                                name="delivery", daemon=True)
    delivery.start()
    reminders = ReminderSender.from_settings(services.db, settings)
    log.info("worker started: delivery, stalled sweep every %.0fs, patient reminders every "
             "%.0fs", sweep_interval, REMINDER_INTERVAL)
    next_sweep = 0.0
    while not stop.is_set():
        if time.monotonic() >= next_sweep:
            next_sweep = time.monotonic() + sweep_interval
            try:
                changed = stalled_sweep(services)
                if changed:
                    log.info("stalled sweep updated %d referral Tasks", changed)
                purged = audit_retention_sweep(services)
                if purged:
                    log.info("audit retention removed %d AuditEvents", purged)
            except Exception:
                log.exception("stalled sweep failed")
        try:
            sent = reminders.run_once()
            if sent.sent or sent.failed:
                log.info("patient reminders: %d sent, %d failed", sent.sent, sent.failed)
        except Exception:
            log.exception("patient reminders failed")
        stop.wait(min(sweep_interval, REMINDER_INTERVAL))
    delivery.join(timeout=30)
    services.db.dispose()
    return 0
