"""gunicorn's threaded worker, answering HTTP protocol errors with an OperationOutcome.

Some requests fail before the application sees them: a request line longer than gunicorn's
limit (414), too many or too large header fields (431), a malformed request line, header or
chunked body (400), an unsupported transfer coding (501). gunicorn answers those itself with
an HTML page; a FHIR client expects an OperationOutcome. This worker class writes the same
status with an OperationOutcome body (`python -m fhir_server serve` uses it).
"""

from __future__ import annotations

import ssl
from typing import Any

import orjson
from gunicorn.http import errors as http_errors
from gunicorn.util import write_nonblock
from gunicorn.workers.gthread import ThreadWorker

WORKER_CLASS = "fhir_server.rest.gunicorn_worker.FhirThreadWorker"

# (gunicorn exception class name, status, reason, issue code, advice); first match wins.
_KNOWN: tuple[tuple[str, int, str, str, str], ...] = (
    ("LimitRequestLine", 414, "URI Too Long", "too-long",
     "The request line is too long; send a long search as POST [type]/_search with a form "
     "body"),
    ("LimitRequestHeaders", 431, "Request Header Fields Too Large", "too-long",
     "The request has too many or too large header fields"),
    ("UnsupportedTransferCoding", 501, "Not Implemented", "not-supported",
     "Unsupported Transfer-Encoding"),
    ("ExpectationFailed", 417, "Expectation Failed", "not-supported",
     "Unsupported Expect header"),
    ("ForbiddenProxyRequest", 403, "Forbidden", "forbidden", "Proxy request not allowed"),
    ("ConfigurationProblem", 500, "Internal Server Error", "exception",
     "Server configuration problem"),
)


def error_for(exc: BaseException) -> tuple[int, str, str, str]:
    """(status, reason, issue code, diagnostics) for an error gunicorn caught."""
    for name, status, reason, code, advice in _KNOWN:
        cls = getattr(http_errors, name, None)
        if cls is not None and isinstance(exc, cls):
            return status, reason, code, f"{advice}: {exc}"[:500]
    if isinstance(exc, ssl.SSLError):
        return 403, "Forbidden", "security", "TLS error"
    if isinstance(exc, http_errors.ParseException):
        return 400, "Bad Request", "structure", f"Malformed HTTP request: {exc}"[:500]
    return 500, "Internal Server Error", "exception", \
        "Internal server error; the request was not applied"


def outcome_response(status: int, reason: str, code: str, diagnostics: str) -> bytes:
    """A complete HTTP/1.1 response carrying an OperationOutcome (the connection closes)."""
    body = orjson.dumps({"resourceType": "OperationOutcome", "issue": [
        {"severity": "error" if status < 500 else "fatal", "code": code,
         "diagnostics": diagnostics}]})
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/fhir+json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body


class FhirThreadWorker(ThreadWorker):  # type: ignore[misc]
    """ThreadWorker whose protocol-error responses are OperationOutcomes."""

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        status, reason, code, diagnostics = error_for(exc)
        if status < 500:
            ip = addr[0] if addr else ""
            self.log.warning("Invalid request from ip=%s: %s", ip, exc)
        else:
            self.log.exception("Error handling request %s", getattr(req, "uri", "(no URI read)"))
        try:
            write_nonblock(client, outcome_response(status, reason, code, diagnostics))
        except Exception:  # noqa: BLE001 - the client may be gone; nothing left to tell it
            self.log.debug("Failed to send error message.")
