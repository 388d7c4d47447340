"""The worker's reminder pass: send the due reminders of the queue by e-mail (the existing
SMTP channel) and text message (the SMS gateway), respecting each patient's choices, quiet
hours, and whether the reminder still makes sense (a Task done meanwhile is not reminded).

Each reminder is claimed (a lease), sent outside any database transaction, then finished:
`sent` when every channel the patient wants took it, `skipped` when there is nothing to send
(opted out, no address, Task closed), rescheduled with back-off when a channel failed, and
`failed` after `MAX_ATTEMPTS`. A channel that already took the message is not used again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from fhir_server.config import Settings, public_root
from fhir_server.reminders.gateway import SmsError, SmsGateway, gateway_from
from fhir_server.reminders.messages import message
from fhir_server.reminders.quiet import QuietHours
from fhir_server.reminders.rules import OPEN, REFERRAL_ACCEPTED
from fhir_server.storage import reminders_store as store
from fhir_server.storage.db import Database
from fhir_server.storage.repository import Repository
from mappers.reminder_preferences import CHANNELS, Preferences, preferences
from subscriptions.channels import DeliveryError, SmtpSettings, send_mail, text_email

log = logging.getLogger("fhir_server.reminders")
MAX_ATTEMPTS = 6
LEASE_SECONDS = 300
STILL_WORTH_IT = {REFERRAL_ACCEPTED: frozenset({"accepted", "in-progress"})}


def link_for(settings: Settings) -> str:
    """The patient's sign-in page: configured, else under the public base URL."""
    if settings.reminder_link:
        return settings.reminder_link
    root = public_root(settings.base_url) or "http://127.0.0.1:8080"
    return f"{root}/me/"


def backoff(attempts: int) -> timedelta:
    """1, 2, 4, ... minutes, at most an hour."""
    return timedelta(minutes=min(60, 2 ** max(0, attempts - 1)))


@dataclass
class Outcome:
    sent: int = 0
    skipped: int = 0
    deferred: int = 0
    failed: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class ReminderSender:
    """Sends the due reminders of one database."""

    db: Database
    link: str
    quiet: QuietHours
    smtp: SmtpSettings | None
    sms: SmsGateway | None

    @classmethod
    def from_settings(cls, db: Database, settings: Settings,
                      smtp: SmtpSettings | None = None) -> ReminderSender:
        """The sender the settings describe (SMTP: `FHIR_SERVER_SMTP_*` unless given)."""
        return cls(db=db, link=link_for(settings),
                   quiet=QuietHours.parse(settings.reminder_quiet_hours,
                                          settings.reminder_timezone),
                   smtp=smtp or SmtpSettings(settings.smtp_host, settings.smtp_port,
                                             settings.smtp_from),
                   sms=gateway_from(settings))

    def run_once(self, now: datetime | None = None) -> Outcome:
        """Send every reminder due at `now`."""
        now = now or datetime.now(UTC)
        stamp = int(now.timestamp())
        outcome = Outcome()
        with self.db.write() as conn:
            claimed = store.claim(conn, stamp, LEASE_SECONDS)
        for reminder in claimed:
            self._one(reminder, now, outcome)
        return outcome

    def _one(self, reminder: store.Reminder, now: datetime, outcome: Outcome) -> None:
        stamp = int(now.timestamp())
        patient, task = self._read(reminder)
        why_not = self._pointless(reminder, patient, task)
        prefs = preferences(patient)
        wanted = self._channels(prefs) - reminder.channels
        if not why_not and not wanted and not reminder.channels:
            why_not = "the patient wants no reminders, or has no address for them"
        if why_not or not wanted:
            status = store.SKIPPED if why_not else store.SENT
            with self.db.write() as conn:
                store.finish(conn, reminder.id, status, reminder.channels, why_not, stamp)
            outcome.skipped += bool(why_not)
            outcome.sent += not why_not
            return
        if self.quiet.quiet_at(now):
            later = int(self.quiet.next_allowed(now).timestamp())
            with self.db.write() as conn:
                store.reschedule(conn, reminder.id, later, reminder.channels,
                                 reminder.attempts, "quiet hours")
            outcome.deferred += 1
            return
        text = message(reminder.reason, prefs.language, self.link)
        done, problems, retry = set(reminder.channels), [], False
        for channel in sorted(wanted):
            try:
                self._send(channel, prefs, text)
            except (SmsError, DeliveryError) as exc:
                problems.append(f"{channel}: {exc}")
                retry = retry or not isinstance(exc, SmsError) or exc.retry
            else:
                done.add(channel)
        attempts = reminder.attempts + (1 if problems else 0)
        with self.db.write() as conn:
            if not problems:
                store.finish(conn, reminder.id, store.SENT, frozenset(done), "", stamp)
                outcome.sent += 1
            elif retry and attempts < MAX_ATTEMPTS:
                store.reschedule(conn, reminder.id, int((now + backoff(attempts)).timestamp()),
                                 frozenset(done), attempts, "; ".join(problems))
                outcome.deferred += 1
            else:
                store.finish(conn, reminder.id, store.FAILED, frozenset(done),
                             "; ".join(problems), stamp)
                outcome.failed += 1
        for problem in problems:
            log.warning("reminder %s: %s", reminder.id, problem)
        outcome.notes.extend(problems)

    def _read(self, reminder: store.Reminder) -> tuple[dict | None, dict | None]:
        with self.db.read() as conn:
            repo = Repository(conn)
            found = []
            for ref in (reminder.patient, reminder.subject):
                res_type, _, res_id = ref.partition("/")
                stored = repo.read(res_type, res_id) if res_id else None
                found.append(stored.resource() if stored and not stored.deleted else None)
        return found[0], found[1]

    @staticmethod
    def _pointless(reminder: store.Reminder, patient: dict | None, task: dict | None) -> str:
        """Why the reminder should not go out any more ('' when it should)."""
        if patient is None:
            return "the patient record is gone"
        if task is None:
            return "the task is gone"
        status = task.get("status")
        if status not in STILL_WORTH_IT.get(reminder.reason, OPEN):
            return f"the task is {status} now"
        return ""

    def _channels(self, prefs: Preferences) -> frozenset[str]:
        usable = {"email": self.smtp is not None, "sms": self.sms is not None}
        return frozenset(c for c in CHANNELS if usable[c] and prefs.wants(c))

    def _send(self, channel: str, prefs: Preferences, text) -> None:  # type: ignore[no-untyped-def]
        if channel == "email":
            assert self.smtp is not None
            send_mail(self.smtp, text_email(self.smtp, prefs.email, text.subject, text.email,
                                            text.language))
        else:
            assert self.sms is not None
            self.sms.send(prefs.phone, text.sms)


def send_reminders(db: Database, settings: Settings, now: datetime | None = None) -> Outcome:
    """One pass of the worker (`python -m fhir_server worker`)."""
    return ReminderSender.from_settings(db, settings).run_once(now)
