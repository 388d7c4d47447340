"""Search index tables: narrow, typed, one row per indexed value, keyed by resource pid.

Every table carries (pid, res_type, param, grp): `grp` ties the components of one composite
value together (0 for ordinary rows). Value indexes are (res_type, param, value..., pid):
covering for the `pid IN (lookup)` that drives a search. The (pid, ...) indexes serve
deletion, EXISTS probes by pid, sort keys and _include.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, Index, Integer, String, Table, Text

from fhir_server.storage.schema import metadata


def _cstr(length: int) -> String:
    """A string column compared byte-wise (C collation on PostgreSQL, BINARY on SQLite), so
    prefix ranges use the index and sort order is the same on both databases."""
    return String(length).with_variant(String(length, collation="C"), "postgresql")


def _base_columns() -> list[Column]:
    return [
        Column("pid", BigInteger, nullable=False),
        Column("res_type", String(64), nullable=False),
        Column("param", String(100), nullable=False),
        Column("grp", Integer, nullable=False, default=0),
    ]


idx_string = Table(
    "idx_string", metadata, *_base_columns(),
    Column("value_norm", _cstr(200), nullable=False),
    Column("value_exact", Text, nullable=False),
)
Index("ix_idx_string_value", idx_string.c.res_type, idx_string.c.param,
      idx_string.c.value_norm, idx_string.c.pid)
Index("ix_idx_string_pid", idx_string.c.pid)

idx_token = Table(
    "idx_token", metadata, *_base_columns(),
    Column("system", _cstr(255), nullable=True),
    Column("code", _cstr(255), nullable=True),
    Column("text", _cstr(200), nullable=True),  # normalised display / text for :text
)
Index("ix_idx_token_code", idx_token.c.res_type, idx_token.c.param, idx_token.c.code,
      idx_token.c.system, idx_token.c.pid)
Index("ix_idx_token_pid", idx_token.c.pid, idx_token.c.param)

idx_reference = Table(
    "idx_reference", metadata, *_base_columns(),
    Column("target_type", String(64), nullable=True),  # joins resources.res_type
    Column("target_id", String(64), nullable=True),  # joins resources.res_id
    Column("url", Text, nullable=True),  # absolute / canonical / urn references
    Column("ident_system", _cstr(255), nullable=True),
    Column("ident_value", _cstr(255), nullable=True),
)
Index("ix_idx_ref_target", idx_reference.c.res_type, idx_reference.c.param,
      idx_reference.c.target_id, idx_reference.c.target_type, idx_reference.c.pid)
Index("ix_idx_ref_url", idx_reference.c.res_type, idx_reference.c.param, idx_reference.c.url)
Index("ix_idx_ref_reverse", idx_reference.c.target_id, idx_reference.c.target_type)
# Probes, _include and _has by source pid; covering, so no table row is read for a target.
Index("ix_idx_ref_pid", idx_reference.c.pid, idx_reference.c.param,
      idx_reference.c.target_type, idx_reference.c.target_id)

idx_date = Table(
    "idx_date", metadata, *_base_columns(),
    Column("low", BigInteger, nullable=False),  # epoch µs, inclusive
    Column("high", BigInteger, nullable=False),  # epoch µs, exclusive
)
Index("ix_idx_date_low", idx_date.c.res_type, idx_date.c.param, idx_date.c.low,
      idx_date.c.high, idx_date.c.pid)
Index("ix_idx_date_high", idx_date.c.res_type, idx_date.c.param, idx_date.c.high)
Index("ix_idx_date_pid", idx_date.c.pid, idx_date.c.param)

idx_number = Table(
    "idx_number", metadata, *_base_columns(),
    Column("value", Float, nullable=False),
)
Index("ix_idx_number_value", idx_number.c.res_type, idx_number.c.param, idx_number.c.value)
Index("ix_idx_number_pid", idx_number.c.pid)

idx_quantity = Table(
    "idx_quantity", metadata, *_base_columns(),
    Column("value", Float, nullable=False),
    Column("system", _cstr(255), nullable=True),
    Column("code", _cstr(100), nullable=True),
    Column("unit", _cstr(100), nullable=True),
)
Index("ix_idx_quantity_value", idx_quantity.c.res_type, idx_quantity.c.param,
      idx_quantity.c.value)
Index("ix_idx_quantity_pid", idx_quantity.c.pid)

idx_uri = Table(
    "idx_uri", metadata, *_base_columns(),
    Column("uri", _cstr(500), nullable=False),
)
Index("ix_idx_uri_value", idx_uri.c.res_type, idx_uri.c.param, idx_uri.c.uri)
Index("ix_idx_uri_pid", idx_uri.c.pid)

idx_coords = Table(
    "idx_coords", metadata, *_base_columns(),
    Column("latitude", Float, nullable=False),
    Column("longitude", Float, nullable=False),
)
Index("ix_idx_coords_pos", idx_coords.c.res_type, idx_coords.c.latitude,
      idx_coords.c.longitude)
Index("ix_idx_coords_pid", idx_coords.c.pid)

INDEX_TABLES: dict[str, Table] = {
    "string": idx_string, "token": idx_token, "reference": idx_reference, "date": idx_date,
    "number": idx_number, "quantity": idx_quantity, "uri": idx_uri, "special": idx_coords,
}
