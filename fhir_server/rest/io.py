"""Request bodies in and response bodies out, in JSON or XML, with FHIR headers."""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from typing import Any

import orjson
from flask import Request, Response
from werkzeug.exceptions import RequestEntityTooLarge

from fhir_server.errors import FhirError, Issue, operation_outcome
from fhir_server.formats.decimals import json_default
from fhir_server.formats.json_body import BodyError, BodyLimits, check_tree, parse_json_body
from fhir_server.formats.negotiation import request_format, response_format
from fhir_server.interactions.results import Result

JSON_MIME = "application/fhir+json; charset=utf-8"
XML_MIME = "application/fhir+xml; charset=utf-8"


def wanted_format(request: Request) -> str:
    """'json' or 'xml' from _format / Accept (406 when neither can be served)."""
    return response_format(request.headers.get("Accept"), request.args.get("_format"))


def read_body(request: Request, max_bytes: int, *, allow_patch: bool = False,
              limits: BodyLimits | None = None, root: str = "Resource") -> Any:
    """Parse the request body per Content-Type: a resource dict, or a JSON Patch list.
    `root` names the top of error expressions when the body has no resourceType."""
    limits = limits or BodyLimits()
    content_type = request.headers.get("Content-Type")
    if request.content_length is not None and request.content_length > max_bytes:
        raise FhirError(413, "too-long", f"Request body larger than {max_bytes} bytes", root)
    data = body_bytes(request, root)
    if len(data) > max_bytes:
        raise FhirError(413, "too-long", f"Request body larger than {max_bytes} bytes", root)
    if not data.strip():
        raise FhirError(400, "required", "The request has no body", root)
    kind = request_format(content_type)
    if kind == "json-patch" and not allow_patch:
        raise FhirError(415, "not-supported",
                        "application/json-patch+json is only accepted by PATCH", root)
    if allow_patch and kind not in ("json-patch",):
        raise FhirError(415, "not-supported",
                        "PATCH requires Content-Type application/json-patch+json", root)
    try:
        if kind == "xml":
            from fhir_server.formats.xml import xml_to_json

            tree = xml_to_json(data, max_bytes=max_bytes)
            check_tree(tree, limits, root)
            return tree
        return parse_json_body(data, limits, root, null_members=kind == "json-patch")
    except BodyError as exc:
        raise FhirError(400, exc.code, exc.message, exc.expression) from None


def body_bytes(request: Request, root: str) -> bytes:
    """The raw body (Flask's MAX_CONTENT_LENGTH bounds it). A body the client framed badly
    (a broken chunked encoding, a connection closed early) is the client's error: 400."""
    try:
        return request.get_data(cache=True)
    except RequestEntityTooLarge:
        raise FhirError(413, "too-long", "Request body too large", root) from None
    except Exception as exc:  # the server's input stream: gunicorn ParseException, OSError
        raise FhirError(400, "structure", f"The request body could not be read: "
                        f"{type(exc).__name__}: {exc}"[:300], root) from None


def body_limits(settings: Any) -> BodyLimits:
    """The body limits from the server Settings."""
    return BodyLimits(max_depth=settings.max_json_depth,
                      max_number_digits=settings.max_number_digits,
                      max_number_exponent=settings.max_number_exponent)


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
