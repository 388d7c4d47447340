"""Tables for Subscription state and the durable event outbox (on the shared `metadata`).

Times are epoch microseconds (UTC), like the resource tables.

- `subscription_registry`: one row per Subscription: normalised spec, status and the
  gap-free event counter. Writers (record_events) read it and bump `event_count`.
- `subscription_delivery`: the worker's bookkeeping per Subscription (delivered watermark,
  lease, retry/backoff, errors, last notification). Writers never touch it, so delivery
  never blocks resource writes.
- `subscription_events`: one row per (subscription, event number): the outbox and the
  `$events` store, pruned after the retention period once delivered.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, String, Table, Text

from fhir_server.storage.schema import metadata

registry = Table(
    "subscription_registry",
    metadata,
    Column("sub_id", String(64), primary_key=True),
    Column("topic_url", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("spec", Text, nullable=False),  # SubscriptionSpec.to_json()
    Column("owner", Text, nullable=True),  # opaque principal used by readable_by
    Column("heartbeat_period", Integer, nullable=True),  # seconds
    Column("end_at", BigInteger, nullable=True),
    Column("event_count", BigInteger, nullable=False, default=0),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)
Index("ix_subscription_registry_topic_status", registry.c.topic_url, registry.c.status)

delivery = Table(
    "subscription_delivery",
    metadata,
    Column("sub_id", String(64), primary_key=True),
    Column("delivered_through", BigInteger, nullable=False, default=0),
    Column("needs_handshake", Boolean, nullable=False, default=True),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_until", BigInteger, nullable=False, default=0),
    Column("next_attempt_at", BigInteger, nullable=False, default=0),
    Column("attempts", Integer, nullable=False, default=0),
    Column("first_failure_at", BigInteger, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("error_code", String(32), nullable=True),
    Column("last_sent_at", BigInteger, nullable=True),  # any notification accepted
    Column("last_delivery_at", BigInteger, nullable=True),  # last event batch accepted
)
Index("ix_subscription_delivery_due", delivery.c.next_attempt_at, delivery.c.lease_until)

events = Table(
    "subscription_events",
    metadata,
    Column("sub_id", String(64), primary_key=True),
    Column("event_number", BigInteger, primary_key=True),
    Column("focus_type", String(64), nullable=False),
    Column("focus_id", String(64), nullable=False),
    Column("focus_version", String(32), nullable=True),
    Column("interaction", String(8), nullable=False),
    Column("context", Text, nullable=True),  # JSON list of additional-context references
    Column("occurred_at", BigInteger, nullable=False),
)
Index("ix_subscription_events_occurred", events.c.occurred_at)
