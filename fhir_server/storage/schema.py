"""SQLAlchemy Core tables for resources and their history.

Search index tables live in `index_schema.py` on the same `metadata`.
Times are stored as integer microseconds since the Unix epoch (UTC): portable across
SQLite and PostgreSQL, exact, and cheap to compare and sort.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# BIGINT primary keys on PostgreSQL; SQLite needs INTEGER for rowid aliasing / autoincrement.
PidType = BigInteger().with_variant(Integer(), "sqlite")

resources = Table(
    "resources",
    metadata,
    Column("pid", PidType, primary_key=True, autoincrement=True),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("last_updated", BigInteger, nullable=False),  # epoch microseconds, UTC
    Column("deleted", Boolean, nullable=False, default=False),
    Column("body", Text, nullable=True),  # current JSON (with id/meta); NULL when deleted
    # "Organization/x" whose staff or client created the resource (NULL: the server itself,
    # an administrator without an organization, or data older than migration 0005). The
    # access policy lets an organization see what it wrote (fhir_server/auth/README.md).
    Column("author_org", String(128), nullable=True),
    UniqueConstraint("res_type", "res_id", name="uq_resources_type_id"),
)
Index("ix_resources_type_updated", resources.c.res_type, resources.c.last_updated)
# A type's rows in pid order: the adaptive search plan walks it to a page with probes.
Index("ix_resources_type_pid", resources.c.res_type, resources.c.pid)
Index("ix_resources_author", resources.c.author_org, resources.c.res_type)

history = Table(
    "resource_history",
    metadata,
    Column("hid", PidType, primary_key=True, autoincrement=True),
    Column("pid", BigInteger, nullable=False),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("last_updated", BigInteger, nullable=False),
    Column("method", String(8), nullable=False),  # POST | PUT | PATCH | DELETE
    Column("deleted", Boolean, nullable=False, default=False),
    # A superseded version's JSON, compressed (history_bodies.py). NULL for the current
    # version (its body is resources.body, not stored twice) and for a deletion.
    Column("zbody", LargeBinary, nullable=True),
    UniqueConstraint("res_type", "res_id", "version", name="uq_history_type_id_version"),
)
Index("ix_history_updated", history.c.last_updated, history.c.hid)
Index("ix_history_type_updated", history.c.res_type, history.c.last_updated, history.c.hid)

# Serialises conditional creates: one row per (type, normalised criteria) while a create
# for those criteria is in flight or done. A concurrent duplicate hits the unique key.
conditional_keys = Table(
    "conditional_keys",
    metadata,
    Column("res_type", String(64), primary_key=True),
    Column("criteria_hash", String(64), primary_key=True),
    Column("pid", BigInteger, nullable=False),
)
