"""Evaluate simple FHIR search criteria directly on one resource (pure, no database).

Used for topic queryCriteria and Subscription filter criteria. Supports the parameters the
topics need: token (`system|code`, `code`, `system|`, `|code`, modifiers `:not`, `:missing`),
reference (`Type/id`, absolute URL, bare id, `:missing`) and date (`_lastUpdated` with the
prefixes eq ne gt lt ge le sa eb). Comma-separated values are ORed; parameters are ANDed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

from fhir_server.paths import values_at

# (resource type or "*", parameter) -> (kind, element path, implicit code system)
PARAMS: dict[tuple[str, str], tuple[str, str, str | None]] = {
    ("*", "_id"): ("token", "id", None),
    ("*", "_lastUpdated"): ("date", "meta.lastUpdated", None),
    ("Task", "status"): ("token", "status", "http://hl7.org/fhir/task-status"),
    ("Task", "intent"): ("token", "intent", "http://hl7.org/fhir/task-intent"),
    ("Task", "code"): ("token", "code", None),
    ("Task", "business-status"): ("token", "businessStatus", None),
    ("Task", "priority"): ("token", "priority", "http://hl7.org/fhir/request-priority"),
    ("Task", "owner"): ("reference", "owner", None),
    ("Task", "requester"): ("reference", "requester", None),
    ("Task", "focus"): ("reference", "focus", None),
    ("Task", "patient"): ("reference", "for", None),
    ("Task", "subject"): ("reference", "for", None),
    ("ServiceRequest", "status"): ("token", "status", "http://hl7.org/fhir/request-status"),
    ("ServiceRequest", "code"): ("token", "code", None),
    ("ServiceRequest", "patient"): ("reference", "subject", None),
    ("ServiceRequest", "subject"): ("reference", "subject", None),
    ("ServiceRequest", "requester"): ("reference", "requester", None),
    ("ServiceRequest", "performer"): ("reference", "performer", None),
    ("Observation", "status"): ("token", "status", "http://hl7.org/fhir/observation-status"),
    ("Observation", "code"): ("token", "code", None),
    ("Observation", "value-concept"): ("token", "valueCodeableConcept", None),
    ("Observation", "patient"): ("reference", "subject", None),
    ("Observation", "subject"): ("reference", "subject", None),
}
MODIFIERS = {"token": {"", "not", "missing"}, "reference": {"", "missing"}, "date": {"", "missing"}}
DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb")


@dataclass(frozen=True)
class Criterion:
    """One `param[:modifier]=v1,v2` clause."""

    param: str
    modifier: str
    values: tuple[str, ...]


def param_def(resource_type: str, param: str) -> tuple[str, str, str | None] | None:
    """The (kind, path, implicit system) of a supported parameter, or None."""
    return PARAMS.get((resource_type, param)) or PARAMS.get(("*", param))


def parse_query(query: str) -> list[Criterion]:
    """Parse `a=b&c:not=d,e` into criteria (values URL-decoded, commas split)."""
    out: list[Criterion] = []
    for part in query.split("&"):
        if not part:
            continue
        name, sep, raw = part.partition("=")
        if not sep:
            raise ValueError(f"criterion {part!r} has no '='")
        param, _, modifier = unquote(name).partition(":")
        values = tuple(unquote(v) for v in _split_commas(raw))
        out.append(Criterion(param.strip(), modifier.strip(), values))
    return out


def _split_commas(raw: str) -> list[str]:
    parts, buf, escaped = [], "", False
    for ch in raw:
        if escaped:
            buf += ch
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            parts.append(buf)
            buf = ""
        else:
            buf += ch
    parts.append(buf)
    return parts


def _tokens(values: list[Any], implicit_system: str | None) -> list[tuple[str | None, str]]:
    out: list[tuple[str | None, str]] = []
    for v in values:
        if isinstance(v, str):
            out.append((implicit_system, v))
        elif isinstance(v, dict):
            for c in v.get("coding", []) if "coding" in v else [v]:
                if isinstance(c, dict) and "code" in c:
                    out.append((c.get("system"), c["code"]))
                elif isinstance(c, dict) and "value" in c:  # Identifier
                    out.append((c.get("system"), c["value"]))
    return out


def _token_match(wanted: str, have: list[tuple[str | None, str]]) -> bool:
    if "|" in wanted:
        system, _, code = wanted.partition("|")
        if system == "":
            return any(s is None and c == code for s, c in have)
        if code == "":
            return any(s == system for s, _ in have)
        return any(s == system and c == code for s, c in have)
    return any(c == wanted for _, c in have)


def _ref_key(ref: str) -> tuple[str, str]:
    ref = ref.split("/_history/")[0].rstrip("/")
    parts = ref.split("/")
    if len(parts) >= 2:
        return parts[-2], parts[-1]
    return "", parts[-1]


def _ref_match(wanted: str, values: list[Any]) -> bool:
    w_type, w_id = _ref_key(wanted)
    for v in values:
        ref = v.get("reference") if isinstance(v, dict) else None
        if not isinstance(ref, str):
            continue
        h_type, h_id = _ref_key(ref)
        if h_id == w_id and (not w_type or w_type == h_type):
            return True
    return False


def _parse_instant(text: str) -> tuple[datetime, datetime]:
    """The [start, end) range a FHIR date/dateTime/instant value covers, in UTC."""
    t = text.strip().replace("Z", "+00:00")
    fmts = [("%Y", 4), ("%Y-%m", 7), ("%Y-%m-%d", 10)]
    for fmt, n in fmts:
        if len(t) == n:
            start = datetime.strptime(t, fmt).replace(tzinfo=UTC)
            if n == 4:
                end = start.replace(year=start.year + 1)
            elif n == 7:
                end = (start + timedelta(days=32)).replace(day=1)
            else:
                end = start + timedelta(days=1)
            return start, end
    dt = datetime.fromisoformat(t)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    dt = dt.astimezone(UTC)
    if "." in t:
        return dt, dt + timedelta(microseconds=1)
    return dt, dt + timedelta(seconds=1)


def _date_match(wanted: str, values: list[Any]) -> bool:
    prefix = wanted[:2] if wanted[:2] in DATE_PREFIXES else "eq"
    ws, we = _parse_instant(wanted[2:] if wanted[:2] in DATE_PREFIXES else wanted)
    for v in values:
        if not isinstance(v, str):
            continue
        hs, he = _parse_instant(v)
        ok = {
            "eq": ws <= hs and he <= we,
            "ne": not (ws <= hs and he <= we),
            "gt": he > we,
            "sa": hs >= we,
            "lt": hs < ws,
            "eb": he <= ws,
            "ge": he > ws,
            "le": hs < we,
        }[prefix]
        if ok:
            return True
    return False


def validate_value(kind: str, value: str) -> None:
    """Raise ValueError if `value` is not a valid search value of this kind."""
    if value == "":
        raise ValueError("empty value")
    if kind == "date":
        _parse_instant(value[2:] if value[:2] in DATE_PREFIXES else value)


def criterion_matches(resource: dict[str, Any], crit: Criterion) -> bool:
    """Whether one criterion holds for the resource (unknown parameters never match)."""
    definition = param_def(resource.get("resourceType", ""), crit.param)
    if definition is None:
        return False
    kind, path, system = definition
    found = values_at(resource, path)
    if crit.modifier == "missing":
        want_missing = crit.values[0].lower() == "true"
        return (not found) == want_missing
    if kind == "token":
        have = _tokens(found, system)
        hit = any(_token_match(v, have) for v in crit.values)
        return not hit if crit.modifier == "not" else hit
    if kind == "reference":
        return any(_ref_match(v, found) for v in crit.values)
    return any(_date_match(v, found) for v in crit.values)


def matches(resource: dict[str, Any], criteria: list[Criterion]) -> bool:
    """Whether every criterion holds (AND)."""
    return all(criterion_matches(resource, c) for c in criteria)
