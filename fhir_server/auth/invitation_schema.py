"""Patient invitations (on the shared `metadata`): a one-time code, mailed to the e-mail
address on the patient's record, with which the patient creates their account. Only the
code's SHA-256 is stored. Times are epoch seconds."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Integer, String, Table

from fhir_server.storage.schema import metadata

invitations = Table(
    "auth_invitations",
    metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("patient", String(128), nullable=False),  # Patient/<id>
    Column("language", String(8), nullable=False),  # of the e-mail and the page
    Column("expires", BigInteger, nullable=False),
    Column("used", BigInteger, nullable=True),  # when it made (or locked) an account
    Column("failures", Integer, nullable=False, default=0),  # wrong birth dates
    Column("created", BigInteger, nullable=False),
)
