"""Validate a backport Subscription and normalise it into a SubscriptionSpec (pure).

Rejections raise `FhirError` (400 for malformed content, 422 for well-formed requests this
server will not honour) with FHIRPath expressions. Filters accept the three syntaxes seen in
practice: `Task?owner=Organization/1`, `Task.owner=Organization/1` and `owner=Organization/1`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlparse

from fhir_server.errors import FhirError
from fhir_server.search import match
from fhir_server.search.terms import split_escaped
from subscriptions.topics import Topic, get_topic

BP = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
FILTER_EXT = BP + "backport-filter-criteria"
CONTENT_EXT = BP + "backport-payload-content"
HEARTBEAT_EXT = BP + "backport-heartbeat-period"
TIMEOUT_EXT = BP + "backport-timeout"
MAX_COUNT_EXT = BP + "backport-max-count"
CHANNEL_EXTS = {HEARTBEAT_EXT, TIMEOUT_EXT, MAX_COUNT_EXT}
CROSS_VERSION = re.compile(r"^https?://hl7\.org/fhir/\d+\.\d+/")
SUPPORTED_CHANNELS = ("rest-hook", "email")
JSON_TYPES = ("application/fhir+json", "application/json")
XML_TYPES = ("application/fhir+xml", "application/xml")
CONTENT_CODES = ("empty", "id-only", "full-resource")
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
DEFAULT_TIMEOUT = 30
MAX_REASON = 1000
MAX_TIMEOUT = 120


@dataclass(frozen=True)
class Filter:
    """One filter clause on the topic's resource type: `param[:modifier]=v1,v2` (values
    keep their search escapes), evaluated with the search matcher."""

    resource_type: str
    param: str
    modifier: str
    values: tuple[str, ...]

    def criteria(self, base_url: str | None = None) -> match.Criteria:
        """The clause as search criteria (parsed once per process); with this server's
        `base_url`, values naming its absolute URLs also match relative references."""
        name = f"{self.param}:{self.modifier}" if self.modifier else self.param
        return match.criteria(self.resource_type, ((name, ",".join(self.values)),),
                              base_url=base_url)


@dataclass(frozen=True)
class SubscriptionSpec:
    """The normalised, validated content of a Subscription."""

    topic_url: str
    filters: tuple[Filter, ...]
    channel_type: str
    endpoint: str
    payload_mime: str
    content: str
    headers: tuple[tuple[str, str], ...]
    heartbeat_period: int | None
    timeout: int
    max_count: int | None
    status: str
    end: str | None = None
    raw_headers: tuple[str, ...] = field(default=())
    reason: str = ""  # Subscription.reason: what an e-mail notification tells its reader

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (stored in the subscription table)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SubscriptionSpec:
        """Inverse of `to_json`."""
        data = dict(data)
        data["filters"] = tuple(
            Filter(f["resource_type"], f["param"], f["modifier"], tuple(f["values"]))
            for f in data["filters"]
        )
        data["headers"] = tuple(tuple(h) for h in data["headers"])
        data["raw_headers"] = tuple(data.get("raw_headers", ()))
        return cls(**data)

    @property
    def is_xml(self) -> bool:
        return self.payload_mime in XML_TYPES


def _bad(diag: str, expr: str, status: int = 422, code: str = "not-supported") -> FhirError:
    return FhirError(status, code, diag, expr)


def _ext_value(exts: list[dict[str, Any]], url: str) -> Any:
    for e in exts:
        if e.get("url") == url:
            return next((v for k, v in e.items() if k.startswith("value")), None)
    return None


def _check_extensions(exts: Any, where: str, allowed: set[str]) -> None:
    if exts is None:
        return
    if not isinstance(exts, list):
        raise _bad(f"{where}.extension must be an array", f"{where}.extension", 400, "structure")
    for i, e in enumerate(exts):
        url = e.get("url") if isinstance(e, dict) else None
        if not isinstance(url, str):
            raise _bad("extension without url", f"{where}.extension[{i}]", 400, "structure")
        if CROSS_VERSION.match(url):
            raise _bad(
                f"Cross-version extension {url} is not supported; use {BP}...",
                f"{where}.extension[{i}]",
            )
        if url not in allowed and (url.startswith(BP) or where.endswith("_criteria")):
            raise _bad(f"Extension {url} is not supported here", f"{where}.extension[{i}]")


def _find_modifier_extensions(node: Any, path: str) -> str | None:
    if isinstance(node, dict):
        if node.get("modifierExtension"):
            return path + ".modifierExtension"
        for k, v in node.items():
            found = _find_modifier_extensions(v, f"{path}.{k}")
            if found:
                return found
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found = _find_modifier_extensions(v, f"{path}[{i}]")
            if found:
                return found
    return None


def parse_filter(text: str, topic: Topic, expr: str) -> list[Filter]:
    """Parse one filter-criteria string in any of the three accepted syntaxes."""
    text = text.strip()
    types = sorted(topic.filters) or sorted(topic.resource_types)
    res_type: str | None = None
    query = text
    if "?" in text:
        res_type, _, query = text.partition("?")
    else:
        head = text.split("=", 1)[0]
        if "." in head.split(":", 1)[0]:
            res_type, _, query = text.partition(".")
    if res_type is not None:
        res_type = res_type.strip()
        if res_type not in types:
            raise _bad(
                f"Filter resource type {res_type!r} is not filterable on topic {topic.url}",
                expr,
            )
    try:
        criteria = match.split_query(query)
    except FhirError as exc:
        raise _bad(f"Malformed filter criteria {text!r}: {exc.diagnostics}", expr, 400,
                   "invalid") from exc
    if not criteria:
        raise _bad(f"Empty filter criteria {text!r}", expr, 400, "invalid")
    out: list[Filter] = []
    for name, value in criteria:
        param, _, modifier = name.partition(":")
        candidates = [res_type] if res_type else types
        owner = next((t for t in candidates if param in topic.filters.get(t, ())), None)
        if owner is None:
            allowed = sorted({p for t in candidates for p in topic.filters.get(t, ())})
            raise _bad(
                f"Filter parameter {param!r} is not supported by topic {topic.url}; "
                f"allowed: {', '.join(allowed)}",
                expr,
            )
        clause = Filter(owner, param, modifier, tuple(split_escaped(value, ",")))
        try:
            clause.criteria()
        except match.Unsupported as exc:
            raise _bad(f"Modifier {modifier!r} is not supported for {param!r} in a "
                       f"filter: {exc.diagnostics}", expr) from exc
        except FhirError as exc:
            raise _bad(f"Invalid filter {name}={value!r}: {exc.diagnostics}", expr, 400,
                       "invalid") from exc
        out.append(clause)
    return out


def _parse_headers(raw: Any) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    if raw is None:
        return (), ()
    if not isinstance(raw, list):
        raise _bad("channel.header must be an array of strings", "Subscription.channel.header",
                   400, "structure")
    parsed: list[tuple[str, str]] = []
    for i, h in enumerate(raw):
        expr = f"Subscription.channel.header[{i}]"
        if not isinstance(h, str) or ":" not in h:
            raise _bad("A header must be 'Name: value'", expr, 400, "invalid")
        name, _, value = h.partition(":")
        name = name.strip()
        value = value[1:] if value.startswith(" ") else value
        if not HEADER_NAME.match(name) or "\r" in value or "\n" in value:
            raise _bad(f"Invalid HTTP header {h!r}", expr, 400, "invalid")
        parsed.append((name, value))
    return tuple(parsed), tuple(raw)


def _parse_mime(payload: Any) -> str:
    expr = "Subscription.channel.payload"
    if not isinstance(payload, str) or not payload.strip():
        raise _bad("channel.payload (a MIME type) is required", expr, 400, "required")
    base, *params = [p.strip() for p in payload.split(";")]
    base = base.lower()
    if base not in JSON_TYPES + XML_TYPES:
        raise _bad(
            f"Unsupported payload MIME type {payload!r}; use application/fhir+json or "
            "application/fhir+xml",
            expr,
        )
    for p in params:
        key, _, val = p.partition("=")
        key = key.strip().lower()
        if key == "fhirversion" and val.strip() not in ("4.0", "4.0.1"):
            raise _bad(f"fhirVersion {val!r} is not supported; this server is FHIR 4.0", expr)
        if key not in ("fhirversion", "charset"):
            raise _bad(f"Unsupported MIME parameter {p!r}", expr)
        if key == "charset" and val.strip().lower() != "utf-8":
            raise _bad(f"Unsupported charset {val!r}", expr)
    return base


def _int_ext(exts: list[dict[str, Any]], url: str, expr: str, minimum: int) -> int | None:
    v = _ext_value(exts, url)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise _bad(f"{url.rsplit('/', 1)[-1]} must be an integer >= {minimum}", expr, 400,
                   "invalid")
    return v


def _check_endpoint(channel_type: str, endpoint: Any, content: str,
                    allow_plain_http_full_resource: bool) -> str:
    expr = "Subscription.channel.endpoint"
    if not isinstance(endpoint, str) or not endpoint:
        raise _bad("channel.endpoint is required", expr, 400, "required")
    parsed = urlparse(endpoint)
    if channel_type == "rest-hook":
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise _bad(f"rest-hook endpoint must be an absolute http(s) URL: {endpoint!r}", expr)
        if parsed.scheme == "http" and content == "full-resource" and not (
            allow_plain_http_full_resource
        ):
            raise _bad(
                "full-resource payloads are only sent over https; use id-only or an https "
                "endpoint",
                "Subscription.channel.payload",
            )
    else:
        if parsed.scheme != "mailto" or "@" not in parsed.path:
            raise _bad(f"email endpoint must be a mailto: address: {endpoint!r}", expr)
        if content == "full-resource" and not allow_plain_http_full_resource:
            raise _bad("full-resource payloads are not sent by email; use id-only or empty",
                       "Subscription.channel.payload")
    return endpoint


def validate_subscription(
    sub: dict[str, Any], *, allow_plain_http_full_resource: bool = False
) -> SubscriptionSpec:
    """Validate a backport Subscription; return its SubscriptionSpec or raise FhirError."""
    if not isinstance(sub, dict) or sub.get("resourceType") != "Subscription":
        raise _bad("Not a Subscription resource", "Subscription", 400, "structure")
    mod = _find_modifier_extensions(sub, "Subscription")
    if mod:
        raise _bad("Modifier extensions are not supported on Subscription", mod)
    status = sub.get("status") or "requested"
    if status not in ("requested", "active", "error", "off"):
        raise _bad(f"Unknown Subscription.status {status!r}", "Subscription.status", 400,
                   "invalid")
    criteria = sub.get("criteria")
    if not isinstance(criteria, str) or not criteria:
        raise _bad("criteria (the topic canonical URL) is required", "Subscription.criteria",
                   400, "required")
    topic = get_topic(criteria.strip())
    if topic is None:
        raise _bad(f"Unknown subscription topic {criteria!r}", "Subscription.criteria")
    crit_meta = sub.get("_criteria") or {}
    _check_extensions(crit_meta.get("extension"), "Subscription._criteria", {FILTER_EXT})
    filters: list[Filter] = []
    for i, e in enumerate(crit_meta.get("extension") or []):
        expr = f"Subscription._criteria.extension[{i}]"
        value = e.get("valueString")
        if not isinstance(value, str):
            raise _bad("backport-filter-criteria needs valueString", expr, 400, "invalid")
        filters.extend(parse_filter(value, topic, expr))
    channel = sub.get("channel")
    if not isinstance(channel, dict):
        raise _bad("channel is required", "Subscription.channel", 400, "required")
    ch_exts = channel.get("extension") or []
    _check_extensions(ch_exts, "Subscription.channel", CHANNEL_EXTS)
    ch_type = channel.get("type")
    ch_type_meta = channel.get("_type") or {}
    if ch_type_meta.get("extension"):
        raise _bad("Custom channel types are not supported", "Subscription.channel.type")
    if ch_type not in SUPPORTED_CHANNELS:
        raise _bad(
            f"Channel type {ch_type!r} is not supported; use rest-hook or email",
            "Subscription.channel.type",
        )
    payload_meta = channel.get("_payload") or {}
    _check_extensions(payload_meta.get("extension"), "Subscription.channel._payload",
                      {CONTENT_EXT})
    content = _ext_value(payload_meta.get("extension") or [], CONTENT_EXT) or "id-only"
    if content not in CONTENT_CODES:
        raise _bad(f"Unknown payload content {content!r}", "Subscription.channel._payload")
    mime = _parse_mime(channel.get("payload"))
    endpoint = _check_endpoint(ch_type, channel.get("endpoint"), content,
                               allow_plain_http_full_resource)
    headers, raw_headers = _parse_headers(channel.get("header"))
    timeout = _int_ext(ch_exts, TIMEOUT_EXT, "Subscription.channel.extension", 1)
    if timeout is not None and timeout > MAX_TIMEOUT:
        raise _bad(f"timeout must be at most {MAX_TIMEOUT} seconds",
                   "Subscription.channel.extension")
    return SubscriptionSpec(
        topic_url=topic.url,
        filters=tuple(filters),
        channel_type=ch_type,
        endpoint=endpoint,
        payload_mime=mime,
        content=content,
        headers=headers,
        heartbeat_period=_int_ext(ch_exts, HEARTBEAT_EXT, "Subscription.channel.extension", 1),
        timeout=timeout or DEFAULT_TIMEOUT,
        max_count=_int_ext(ch_exts, MAX_COUNT_EXT, "Subscription.channel.extension", 1),
        status=status,
        end=sub.get("end"),
        raw_headers=raw_headers,
        reason=str(sub.get("reason") or "")[:MAX_REASON],
    )


def filters_match(spec: SubscriptionSpec, resource: dict[str, Any] | match.Indexed,
                  base_url: str | None = None) -> bool:
    """Whether the resource passes every filter of the Subscription (filters are ANDed),
    as a search on this server (`base_url`) would find it."""
    subject = match.indexed(resource)
    return all(f.resource_type == subject.res_type
               and match.matches(subject, f.criteria(base_url)) for f in spec.filters)
