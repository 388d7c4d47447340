"""Request bodies in and response bodies out, in JSON or XML, with FHIR headers."""

from __future__ import annotations

import json
import re
from email.utils import parsedate_to_datetime
from typing import Any

import orjson
from flask import Request, Response

from fhir_server.errors import FhirError, Issue, operation_outcome
from fhir_server.formats.decimals import FhirDecimal, json_default
from fhir_server.formats.negotiation import request_format, response_format
from fhir_server.interactions.results import Result

JSON_MIME = "application/fhir+json; charset=utf-8"
XML_MIME = "application/fhir+xml; charset=utf-8"


def wanted_format(request: Request) -> str:
    """'json' or 'xml' from _format / Accept (406 when neither can be served)."""
    return response_format(request.headers.get("Accept"), request.args.get("_format"))


def read_body(request: Request, max_bytes: int, *, allow_patch: bool = False) -> Any:
    """Parse the request body per Content-Type: a resource dict, or a JSON Patch list."""
    content_type = request.headers.get("Content-Type")
    if request.content_length is not None and request.content_length > max_bytes:
        raise FhirError(413, "too-costly", f"Request body larger than {max_bytes} bytes")
    data = request.get_data(cache=False)
    if len(data) > max_bytes:
        raise FhirError(413, "too-costly", f"Request body larger than {max_bytes} bytes")
    if not data.strip():
        raise FhirError(400, "required", "The request has no body")
    kind = request_format(content_type)
    if kind == "json-patch" and not allow_patch:
        raise FhirError(415, "not-supported",
                        "application/json-patch+json is only accepted by PATCH")
    if allow_patch and kind not in ("json-patch",):
        raise FhirError(415, "not-supported",
                        "PATCH requires Content-Type application/json-patch+json")
    if kind == "xml":
        from fhir_server.formats.xml import xml_to_json

        return xml_to_json(data, max_bytes=max_bytes)
    return parse_json(data)


# A number whose text a float would not reproduce: trailing zeros after the point, or an
# exponent ("12.50", "1e-3"). Only then is the slower decimal-preserving parser used.
_LOSSY_NUMBER = re.compile(rb"[:\[,]\s*-?\d+(\.\d*0|(\.\d+)?[eE][-+]?\d+)\s*[,}\]]")


def parse_json(data: bytes) -> Any:
    """Parse a JSON body; FHIR decimals keep their exact text (12.50 stays 12.50)."""
    try:
        if _LOSSY_NUMBER.search(data):
            return json.loads(data, parse_float=FhirDecimal)
        return orjson.loads(data)
    except (orjson.JSONDecodeError, ValueError, UnicodeDecodeError) as exc:
        raise FhirError(400, "structure", f"Malformed JSON: {exc}") from exc


def if_modified_since_us(request: Request) -> int | None:
    raw = request.headers.get("If-Modified-Since")
    if not raw:
        return None
    try:
        return int(parsedate_to_datetime(raw).timestamp() * 1_000_000)
    except (TypeError, ValueError):
        return None  # RFC 9110: an invalid date is ignored


def prefer(request: Request) -> dict[str, str]:
    """The Prefer header as a dict (return=..., handling=...)."""
    out: dict[str, str] = {}
    for part in request.headers.get("Prefer", "").split(","):
        for token in part.split(";"):
            if "=" in token:
                key, value = token.split("=", 1)
                out[key.strip().lower()] = value.strip().strip('"').lower()
    return out


def render(resource: dict | None, fmt: str, status: int, headers: dict[str, str] | None = None,
           *, body_text: str | None = None) -> Response:
    """A FHIR response; `body_text` is already-serialised JSON (stored bodies)."""
    headers = dict(headers or {})
    if resource is None and body_text is None:
        return Response(b"", status=status, headers=headers)
    if fmt == "xml":
        from fhir_server.formats.xml import json_to_xml

        if resource is None:
            resource = orjson.loads(body_text)  # type: ignore[arg-type]
        return Response(json_to_xml(resource, lenient=True), status=status, headers=headers,
                        content_type=XML_MIME)
    payload = body_text.encode() if body_text is not None else orjson.dumps(
        resource, default=json_default)
    return Response(payload, status=status, headers=headers, content_type=JSON_MIME)


def render_result(result: Result, fmt: str, base_url: str, prefer_return: str) -> Response:
    """Shape an interaction Result: headers from the stored version, body per Prefer."""
    headers = dict(result.headers)
    stored = result.stored
    if stored is not None:
        headers["ETag"] = stored.etag
        headers["Last-Modified"] = stored.last_modified_http
        if result.location:
            headers["Location"] = (f"{base_url}/{stored.res_type}/{stored.res_id}"
                                   f"/_history/{stored.version}")
    if result.status == 304:
        return Response(b"", status=304, headers=headers)
    if result.resource is not None:
        return render(result.resource, fmt, result.status, headers)
    if prefer_return == "minimal" and stored is not None:
        return render(None, fmt, result.status, headers)
    if prefer_return == "operationoutcome" or stored is None or stored.body is None:
        issues = result.issues or [Issue("information", "informational", "OK")]
        return render(operation_outcome(issues), fmt, result.status, headers)
    return render(None, fmt, result.status, headers, body_text=stored.body)


def error_response(error: FhirError, fmt: str) -> Response:
    return render(error.outcome(), fmt, error.status, error.headers)
