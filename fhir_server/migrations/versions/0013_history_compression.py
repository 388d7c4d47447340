"""history compression: superseded versions' bodies compressed, the current one not copied

`resource_history.body` (every version's JSON text, the current one a copy of
`resources.body`) becomes `zbody`: NULL for the current version and for deletions, the
compressed JSON (fhir_server/storage/history_bodies.py) for every superseded version.
Rows are converted in batches of `BATCH` by primary key; the downgrade writes every
version's full text back.

The space the old column held is free for reuse at once; to give it back to the file system
run `VACUUM` (SQLite) or `VACUUM FULL resource_history` (PostgreSQL) once afterwards.

Revision ID: 0013_history_compression
Revises: 0012_patient_invitations
"""

from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa
from alembic import op

from fhir_server.storage import history_bodies

revision = "0013_history_compression"
down_revision = "0012_patient_invitations"
branch_labels = None
depends_on = None

BATCH = 2000


def _batches(conn: sa.Connection, column: str) -> Iterator[list[Any]]:
    """(hid, deleted, stored `column`, current body or None) of every history row, in
    batches by hid; the current body is that of the resource row of the same version."""
    last = 0
    while True:
        rows = conn.execute(sa.text(
            f"SELECT h.hid, h.deleted, h.{column}, r.body FROM resource_history h "
            "LEFT JOIN resources r ON r.pid = h.pid AND r.version = h.version "
            "WHERE h.hid > :last ORDER BY h.hid LIMIT :n"), {"last": last, "n": BATCH}).all()
        if not rows:
            return
        yield rows
        last = rows[-1][0]


def _convert(old: str, new: str, new_type: sa.types.TypeEngine,
             value: Callable[[bool, Any, str | None], Any]) -> None:
    """Add `new`, fill it from each row with `value(deleted, old value, current body)` where
    that is not None, drop `old`."""
    op.add_column("resource_history", sa.Column(new, new_type, nullable=True))
    conn = op.get_bind()
    update = sa.text(f"UPDATE resource_history SET {new} = :v WHERE hid = :hid")
    for rows in _batches(conn, old):
        params = [{"v": v, "hid": hid} for hid, deleted, stored, current in rows
                  if (v := value(bool(deleted), stored, current)) is not None]
        if params:
            conn.execute(update, params)
    op.drop_column("resource_history", old)


def _compressed(deleted: bool, body: str | None, current: str | None) -> bytes | None:
    """A superseded version's body, compressed; None for a deletion and for the current
    version (unless its copy differs from the resource row: then it is kept)."""
    if deleted or body is None or body == current:
        return None
    return history_bodies.encode(body)


def _full_text(deleted: bool, zbody: bytes | None, current: str | None) -> str | None:
    return history_bodies.body(deleted, zbody, current)


def upgrade() -> None:
    _convert("body", "zbody", sa.LargeBinary(), _compressed)


def downgrade() -> None:
    _convert("zbody", "body", sa.Text(), _full_text)
