"""The value an interaction returns to the REST layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fhir_server.errors import Issue
from fhir_server.storage.repository import StoredResource


@dataclass
class Result:
    """HTTP status plus either a stored version (returned as stored) or a built resource."""

    status: int
    stored: StoredResource | None = None
    resource: dict[str, Any] | None = None
    issues: list[Issue] = field(default_factory=list)
    location: bool = False  # send Location for `stored`
    headers: dict[str, str] = field(default_factory=dict)
    raw: tuple[bytes, str] | None = None  # a non-FHIR body (bytes, content type), e.g. CSV
