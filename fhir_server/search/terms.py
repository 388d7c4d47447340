"""Typed search values (the leaves of a parsed query) and FHIR value escaping."""

from __future__ import annotations

from dataclasses import dataclass

DATE_PREFIXES = ("eq", "ne", "lt", "gt", "le", "ge", "sa", "eb", "ap")


@dataclass(frozen=True)
class StringValue:
    """A string (or token :text) search value: normalised and as given."""

    norm: str
    exact: str


@dataclass(frozen=True)
class TokenValue:
    """`code`, `system|code`, `|code` (system None, explicit) or `system|` (code None)."""

    system: str | None
    code: str | None
    explicit_system: bool  # True when a `|` was given


@dataclass(frozen=True)
class ReferenceValue:
    """`Type/id`, `id` (type None), an absolute URL, or `:identifier` system|value.

    With both a type/id and a url, either matches (the url is this server's absolute form).
    """

    target_type: str | None
    target_id: str | None
    url: str | None
    ident_system: str | None
    ident_value: str | None


@dataclass(frozen=True)
class DateValue:
    """A prefixed date: the search range [low, high) in epoch microseconds."""

    prefix: str
    low: int
    high: int


@dataclass(frozen=True)
class NumberValue:
    """A prefixed number and its implicit precision range [low, high)."""

    prefix: str
    value: float
    low: float
    high: float


@dataclass(frozen=True)
class QuantityValue:
    """A prefixed quantity `[prefix]number|system|code`."""

    prefix: str
    value: float
    low: float
    high: float
    system: str | None
    code: str | None


@dataclass(frozen=True)
class UriValue:
    """A uri (or a ValueSet canonical for token :in / :not-in)."""

    uri: str


@dataclass(frozen=True)
class CompositeValue:
    """Component values of a composite parameter, in component order."""

    parts: tuple[object, ...]


@dataclass(frozen=True)
class NearValue:
    """Location `near`: a point and a distance in kilometres."""

    latitude: float
    longitude: float
    distance_km: float


def split_escaped(text: str, sep: str) -> list[str]:
    """Split on `sep` not preceded by a backslash; escapes are kept for `unescape`."""
    out, cur, i = [], [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            cur.append(text[i:i + 2])
            i += 2
            continue
        if ch == sep:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    out.append("".join(cur))
    return out


def unescape(text: str) -> str:
    """Remove FHIR search escapes (`\\,`, `\\|`, `\\$`, `\\\\`)."""
    if "\\" not in text:
        return text
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def split_prefix(raw: str, prefixes: tuple[str, ...]) -> tuple[str, str]:
    """Split a leading comparison prefix (default `eq`); ValueError on an unknown one."""
    if len(raw) >= 2 and raw[:2].isalpha() and raw[:2].islower():
        if raw[:2] in prefixes:
            return raw[:2], raw[2:]
        raise ValueError(f"unknown prefix {raw[:2]!r}")
    return "eq", raw
