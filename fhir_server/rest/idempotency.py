"""Idempotent retries: a write sent with `Idempotency-Key` (or `X-Request-Id`) is done once.

The first request with a key runs normally; its response (status, headers, body) is stored
in the same database transaction as its writes (`Call.remember_response`, called by the
interaction just before it commits), so a response lost on the way back (a killed worker, a
dropped connection, a load balancer time-out) can be fetched again by resending the same
request with the same key: the remembered response comes back, with
`Idempotent-Replayed: true`, and nothing is written twice. The same key with a different
request is a 422; keys are remembered for FHIR_SERVER_IDEMPOTENCY_SECONDS (a day) per caller.

Writes whose interaction does not store the response in its own transaction (a batch, whose
entries commit one by one, and operations) are remembered right after they finish: a retry
after a crash in between runs again, so such clients should also use conditional creates
(README, "Idempotent retries").
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

from flask import Request, Response

from fhir_server.errors import FhirError
from fhir_server.interactions.context import Call
from fhir_server.interactions.results import Result
from fhir_server.storage import request_keys
from fhir_server.storage.db import Connection
from fhir_server.storage.request_keys import KeyInUse, RememberedResponse

log = logging.getLogger(__name__)
KEY_HEADERS = ("Idempotency-Key", "X-Request-Id")
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_KEPT_HEADERS = ("ETag", "Last-Modified", "Location", "Content-Location", "Content-Type")


def key_of(request: Request) -> str | None:
    """The request's idempotency key (writes only); 400 when it is not a sane token."""
    if request.method not in WRITE_METHODS:
        return None
    for header in KEY_HEADERS:
        value = request.headers.get(header)
        if value is None:
            continue
        value = value.strip()
        if not (0 < len(value) <= 200 and value.isascii() and value.isprintable()):
            raise FhirError(400, "invalid", f"{header} must be 1-200 printable ASCII "
                            "characters", header)
        return value
    return None


def owner_of(call: Call) -> str:
    """Whose key it is: the client and user of the token ("" when auth is off)."""
    access = call.access
    parts = [getattr(access, "client_id", None) or "", getattr(access, "user", None) or ""]
    return "|".join(parts)[:200]


def fingerprint(request: Request, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (request.method.encode(), request.full_path.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


class Recorder:
    """Remembers one request's response under its key, inside the write transaction."""

    def __init__(self, call: Call, key: str, print_: str, render: Any) -> None:
        self.call = call
        self.owner = owner_of(call)
        self.key = key
        self.fingerprint = print_
        self.render = render  # Result -> flask Response
        self.response: Response | None = None  # rendered and stored in the transaction

    def replay(self) -> Response | None:
        """The remembered response for this key, or None; 422 for a different request."""
        found = request_keys.find_remembered(self.call.db, self.owner, self.key,
                                             self._oldest_us())
        if found is None:
            return None
        if found.fingerprint != self.fingerprint:
            raise FhirError(422, "business-rule", "This idempotency key was already used "
                            "for a different request (method, URL or body); use a new key",
                            KEY_HEADERS[0])
        response = Response(found.body, status=found.status, headers=found.headers)
        response.headers["Idempotent-Replayed"] = "true"
        return response

    def __call__(self, conn: Connection, result: Result) -> None:
        """Store the response of `result` in the open transaction (first call only)."""
        if self.response is not None or result.status >= 400:
            return
        response = self.render(result)
        try:
            request_keys.remember_in(conn, self.owner, self.key, self._remembered(response),
                                     self._oldest_us())
        except KeyInUse:
            # a twin request with this key committed first: this one must not write too
            raise FhirError(409, "conflict", "A request with this idempotency key was "
                            "processed at the same time; send it again to get its response",
                            KEY_HEADERS[0]) from None
        self.response = response

    def after(self, response: Response) -> None:
        """For writes that did not store their response in their transaction: remember it
        now (best effort; a concurrent twin may have stored it first)."""
        if self.response is not None or response.status_code >= 400 or response.is_streamed:
            return
        if not request_keys.remember_after(self.call.db, self.owner, self.key,
                                           self._remembered(response), self._oldest_us()):
            log.info("idempotency key %s was stored by a concurrent request", self.key)

    def _remembered(self, response: Response) -> RememberedResponse:
        headers = {k: v for k, v in response.headers.items() if k in _KEPT_HEADERS}
        return RememberedResponse(self.fingerprint, response.status_code, headers,
                                  response.get_data(), int(time.time() * 1_000_000))

    def _oldest_us(self) -> int:
        return int((time.time() - self.call.settings.idempotency_seconds) * 1_000_000)

