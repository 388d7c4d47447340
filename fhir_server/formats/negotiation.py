"""Content negotiation for FHIR REST (http.html#mime-type): pure functions of header values.

``response_format`` picks the body format of a response from ``_format`` (which overrides
``Accept``) and ``Accept`` (media ranges with q-values); JSON is the default. ``request_format``
names the format of a request body from its ``Content-Type``. Both accept the FHIR media types,
the generic ``application/json`` / ``application/xml``, their ``text/`` forms and the DSTU2
forms (``application/json+fhir``), with an optional ``fhir-version`` parameter that must name
R4 (4.0 or 4.0.1).
"""

from __future__ import annotations

from fhir_server.errors import FhirError

JSON = "json"
XML = "xml"
JSON_PATCH = "json-patch"

_MEDIA_TYPES = {
    "application/fhir+json": JSON,
    "application/json+fhir": JSON,
    "application/json": JSON,
    "text/json": JSON,
    "application/fhir+xml": XML,
    "application/xml+fhir": XML,
    "application/xml": XML,
    "text/xml": XML,
}
_FORMAT_SHORT = {"json": JSON, "xml": XML}
_FHIR_VERSIONS = {"4.0", "4.0.1"}
SUPPORTED = "application/fhir+json, application/fhir+xml (or _format=json|xml)"


def _split_params(item: str) -> tuple[str, dict[str, str]]:
    """Split ``type/subtype; a=b; c="d"`` into the lower-cased type and its parameters."""
    parts = item.split(";")
    media = parts[0].strip().lower()
    params: dict[str, str] = {}
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if sep:
            params[key.strip().lower()] = value.strip().strip('"')
    return media, params


def _version_ok(params: dict[str, str]) -> bool:
    version = params.get("fhir-version")
    return version is None or version in _FHIR_VERSIONS


def _charset_ok(params: dict[str, str]) -> bool:
    charset = params.get("charset")
    return charset is None or charset.lower() in ("utf-8", "utf8")


def _format_param(value: str) -> str:
    # A "+" left unencoded in a query string arrives as a space (application/fhir xml).
    media, params = _split_params(value.strip().replace(" ", "+"))
    fmt = _FORMAT_SHORT.get(media) or _MEDIA_TYPES.get(media)
    if fmt is None:
        raise FhirError(406, "not-supported",
                        f"_format '{value}' is not supported; use {SUPPORTED}")
    if not _version_ok(params):
        raise FhirError(406, "not-supported",
                        f"_format '{value}' asks for a FHIR version other than R4 (4.0)")
    return fmt


def _accept_ranges(header: str) -> list[tuple[float, int, str]]:
    """(q, position, format) for every Accept range this server can serve."""
    out: list[tuple[float, int, str]] = []
    for position, item in enumerate(header.split(",")):
        if not item.strip():
            continue
        media, params = _split_params(item)
        try:
            q = float(params.get("q", "1"))
        except ValueError:
            continue  # an unreadable q-value makes the range invalid; ignore it
        if not 0 < q <= 1 or not _version_ok(params):
            continue
        if media in ("*/*", "application/*"):
            fmt = JSON
        elif media == "text/*":
            fmt = XML
        else:
            fmt = _MEDIA_TYPES.get(media, "")
        if fmt:
            out.append((q, position, fmt))
    return out


def response_format(accept_header: str | None, format_param: str | None) -> str:
    """``"json"`` or ``"xml"`` for a response; raises FhirError(406) when neither is acceptable.

    ``_format`` wins over ``Accept``. Among Accept ranges the highest q wins, then the
    first listed; ``*/*`` and ``application/*`` mean JSON, ``text/*`` means XML (``text/xml``
    is acceptable, ``text/json`` is not an official FHIR type); ``q=0`` excludes a type.
    No ``Accept``, an empty one, or ``_format`` absent and ``Accept`` absent: JSON.
    """
    if format_param is not None and format_param.strip():
        return _format_param(format_param)
    if accept_header is None or not accept_header.strip():
        return JSON
    ranges = _accept_ranges(accept_header)
    if not ranges:
        raise FhirError(406, "not-supported",
                        f"None of the accepted media types '{accept_header}' can be served; "
                        f"this server provides {SUPPORTED}")
    best = min(ranges, key=lambda r: (-r[0], r[1]))
    return best[2]


def request_format(content_type: str | None) -> str:
    """``"json"``, ``"xml"`` or ``"json-patch"`` for a request body; FhirError(415) otherwise.

    A missing Content-Type means JSON (the default format). The charset, when given, must
    be UTF-8, and a ``fhir-version`` parameter must name R4.
    """
    if content_type is None or not content_type.strip():
        return JSON
    media, params = _split_params(content_type)
    if media == "application/json-patch+json":
        fmt = JSON_PATCH
    else:
        fmt = _MEDIA_TYPES.get(media, "")
    if not fmt:
        raise FhirError(415, "not-supported",
                        f"Content-Type '{content_type}' cannot be read; send "
                        "application/fhir+json, application/fhir+xml or "
                        "application/json-patch+json")
    if not _charset_ok(params):
        raise FhirError(415, "not-supported",
                        f"Content-Type '{content_type}': only the UTF-8 charset is supported")
    if not _version_ok(params):
        raise FhirError(415, "not-supported",
                        f"Content-Type '{content_type}' names a FHIR version other than R4")
    return fmt
