"""The one in-memory search matcher: does this resource match these search criteria?

It evaluates parsed criteria (`parser.parse_search`) over the index values
`extract.extract_index` produces for the resource, which are the rows SQL search reads, with
the comparison rules of `relations.py`, which SQL search uses too. So a Subscription topic or
filter, a granular scope or a patient-compartment check cannot disagree with a search for the
same criteria (the property test `tests/test_search_match.py` checks it against SQL).

Supported: every parameter of the resource's own type and every modifier that needs no other
stored resource: string (`:exact`, `:contains`), token (`:not`, `:text`, `:of-type`),
reference (`:Type`, `:identifier`), date, number, quantity (all prefixes, `ap` included),
uri (`:below`, `:above`), composite, `near`, `:missing`, `_id`, `_lastUpdated`, and OR-ed
filters (compartments). Not supported, because they need other stored resources: chained
parameters, `_has`, and token `:in` / `:not-in` (a ValueSet expansion); `criteria` refuses
them with `Unsupported`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

from fhir_server.errors import FhirError
from fhir_server.search.extract import (
    COMPOSITE_SEP,
    OF_TYPE_SUFFIX,
    IndexValues,
    extract_index,
)
from fhir_server.search.parser import (
    AnyFilter,
    ChainFilter,
    Filter,
    HasFilter,
    MissingFilter,
    ParamFilter,
    compartment_filter,
    parse_search,
)
from fhir_server.search.registry import patient_compartment
from fhir_server.search.relations import (
    date_point_relation,
    date_range_relation,
    every,
    near_relation,
    number_relation,
    some,
    starts_with,
    uri_ancestors,
)
from fhir_server.search.terms import (
    CompositeValue,
    DateValue,
    NearValue,
    NumberValue,
    QuantityValue,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
)
from fhir_server.search.values import date_range

# The IndexValues lists; every row starts with its parameter code.
_TABLES = ("strings", "tokens", "references", "dates", "numbers", "quantities", "uris",
           "coords")


class Unsupported(FhirError):
    """Criteria the in-memory matcher cannot evaluate (they need other stored resources)."""

    def __init__(self, name: str, why: str) -> None:
        super().__init__(400, "not-supported", f"{name}: {why} cannot be evaluated on one "
                         "resource", expression=name)


@dataclass(frozen=True)
class Criteria:
    """Search criteria on one resource type: filters, AND-ed."""

    res_type: str
    filters: tuple[Filter, ...]


@dataclass
class Indexed:
    """A resource with its index values, extracted once (on first use) for any number of
    criteria."""

    resource: dict[str, Any]
    last_updated_us: int | None = None  # the stored time when known (else meta.lastUpdated)
    values: IndexValues | None = None  # already extracted (by the write), else on first use
    _by_param: dict[str, list[tuple[Any, ...]]] | None = field(default=None, repr=False)

    @property
    def res_type(self) -> str:
        return str(self.resource.get("resourceType", ""))

    def rows(self, param: str) -> list[tuple[Any, ...]]:
        """The index rows of one parameter (or composite component, `code$i`)."""
        if self._by_param is None:
            index = self.values if self.values is not None else extract_index(self.resource)
            self._by_param = {}
            for table in _TABLES:
                for row in getattr(index, table):
                    self._by_param.setdefault(row[0], []).append(row)
        return self._by_param.get(param, [])

    def updated_us(self) -> int | None:
        """The time of this version (the stored one, or meta.lastUpdated)."""
        if self.last_updated_us is not None:
            return self.last_updated_us
        text = (self.resource.get("meta") or {}).get("lastUpdated")
        try:
            return date_range(text)[0] if isinstance(text, str) else None
        except ValueError:
            return None


def indexed(resource: dict[str, Any] | Indexed) -> Indexed:
    """`resource` with its index values (extracted now unless it already has them)."""
    return resource if isinstance(resource, Indexed) else Indexed(resource)


# -- criteria ------------------------------------------------------------------------------
def split_query(query: str) -> list[tuple[str, str]]:
    """`a=b&c:not=d` as (name, value) pairs, percent-decoded; `+` stays a plus (time-zone
    offsets in dates), as in Subscription filter and topic criteria."""
    out = []
    for part in query.lstrip("?").split("&"):
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep:
            raise FhirError(400, "invalid", f"Criterion {part!r} has no '='", expression=name)
        out.append((unquote(name).strip(), unquote(value)))
    return out


def criteria(res_type: str, query: str | Sequence[tuple[str, str]], *,
             base_url: str | None = None) -> Criteria:
    """Parse criteria for `res_type` (a query string or (name, value) pairs) strictly:
    unknown parameters and malformed values raise FhirError 400; chains, `_has` and
    `:in`/`:not-in` raise `Unsupported`. Result-control parameters (`_count`...) are not
    criteria and are left out, as search does."""
    pairs = tuple(split_query(query) if isinstance(query, str) else query)
    return _criteria(res_type, pairs, base_url)


@lru_cache(maxsize=1024)
def _criteria(res_type: str, pairs: tuple[tuple[str, str], ...],
              base_url: str | None) -> Criteria:
    parsed = parse_search(res_type, list(pairs), strict=True, base_url=base_url)
    for flt in parsed.filters:
        _check_supported(flt)
    return Criteria(res_type, tuple(parsed.filters))


def _check_supported(flt: Filter) -> None:
    if isinstance(flt, ChainFilter):
        raise Unsupported(flt.param.code, "a chained parameter")
    if isinstance(flt, HasFilter):
        raise Unsupported(f"_has:{flt.source_type}", "_has")
    if isinstance(flt, AnyFilter):
        for option in flt.options:
            _check_supported(option)
    if isinstance(flt, ParamFilter) and flt.modifier in ("in", "not-in"):
        raise Unsupported(flt.name or flt.param.code,
                          f"the :{flt.modifier} modifier (a ValueSet expansion)")


# -- matching ------------------------------------------------------------------------------
def matches(resource: dict[str, Any] | Indexed, crit: Criteria, *,
            now_us: int | None = None) -> bool:
    """Does the resource match every filter of `crit` (and have its type)?"""
    subject = indexed(resource)
    if subject.res_type != crit.res_type:
        return False
    now = now_us if now_us is not None else time.time_ns() // 1000
    return all(_filter(subject, flt, now) for flt in crit.filters)


def in_patient_compartment(resource: dict[str, Any] | Indexed, patient_id: str) -> bool:
    """Is the resource in the compartment of Patient/`patient_id` (the Patient itself
    included), as a compartment search `Patient/<id>/<type>` would find it?"""
    subject = indexed(resource)
    res_type = subject.res_type
    if res_type != "Patient" and not patient_compartment().get(res_type):
        return False
    try:
        flt = compartment_filter(("Patient", patient_id), res_type)
    except FhirError:
        return False
    return matches(subject, Criteria(res_type, (flt,)))


def _filter(s: Indexed, flt: Filter, now: int) -> bool:
    if isinstance(flt, AnyFilter):
        return any(_filter(s, f, now) for f in flt.options)
    if isinstance(flt, MissingFilter):
        if flt.param.type == "composite":
            return True  # as SQL search: composites have no row of their own to miss
        return (not s.rows(flt.param.code)) == flt.missing
    if isinstance(flt, (ChainFilter, HasFilter)):
        raise Unsupported(flt.param.code, "a chain or _has")
    return _param(s, flt, now)


def _param(s: Indexed, flt: ParamFilter, now: int) -> bool:
    p = flt.param
    if p.code == "_id":
        return s.resource.get("id") in {v.code for v in flt.values}  # type: ignore[attr-defined]
    if p.code == "_lastUpdated":
        t = s.updated_us()
        return t is not None and any(date_point_relation(v, t, now, every, some)  # type: ignore[arg-type]
                                     for v in flt.values)
    if p.type == "composite":
        return any(_composite(s, p.code, p.component_types, v, now)  # type: ignore[arg-type]
                   for v in flt.values)
    if flt.modifier in ("in", "not-in"):
        raise Unsupported(flt.name or p.code, f"the :{flt.modifier} modifier")
    param = p.code + OF_TYPE_SUFFIX if flt.modifier == "of-type" else p.code
    hit = any(_value(p.type, flt.modifier, v, row, now)
              for row in s.rows(param) for v in flt.values)
    return not hit if flt.modifier == "not" else hit


def _composite(s: Indexed, code: str, types: tuple[str, ...], v: CompositeValue,
               now: int) -> bool:
    """Some group of component rows matches every component value."""
    groups: dict[int, list[bool]] = {}
    for i, (ctype, part) in enumerate(zip(types, v.parts, strict=True)):
        for row in s.rows(f"{code}{COMPOSITE_SEP}{i}"):
            grp = row[1]
            flags = groups.setdefault(grp, [False] * len(types))
            if not flags[i] and _value(ctype, None, part, row, now):
                flags[i] = True
    return any(all(flags) for flags in groups.values())


def _value(ptype: str, modifier: str | None, v: object, row: tuple[Any, ...],
           now: int) -> bool:
    """One index row against one search value (the rules of storage's `value_cond`)."""
    if ptype == "string":
        assert isinstance(v, StringValue)
        norm, exact = row[2], row[3]
        if modifier == "exact":
            return starts_with(norm, v.norm, every) and exact == v.exact
        if modifier == "contains":
            return v.norm in norm
        return starts_with(norm, v.norm, every)
    if ptype == "token":
        system, code, text = row[2], row[3], row[4]
        if isinstance(v, StringValue):  # :text
            return text is not None and starts_with(text, v.norm, every)
        assert isinstance(v, TokenValue)
        if v.code is not None and code != v.code:
            return False
        return not v.explicit_system or system == v.system
    if ptype == "reference":
        assert isinstance(v, ReferenceValue)
        target_type, target_id, url, ident_system, ident_value = row[2:7]
        if v.ident_value is not None or v.ident_system is not None:
            return ((v.ident_value is None or ident_value == v.ident_value)
                    and (v.ident_system is None or ident_system == v.ident_system))
        if v.target_type is not None:
            local = target_id == v.target_id and target_type == v.target_type
            return local or (v.url is not None and url == v.url)
        if v.url is not None:
            return url == v.url
        return target_id == v.target_id
    if ptype == "date":
        assert isinstance(v, DateValue)
        return bool(date_range_relation(v, row[2], row[3], now, every, some))
    if ptype == "number":
        assert isinstance(v, NumberValue)
        return bool(number_relation(v.prefix, v.value, v.low, v.high, row[2], every, some))
    if ptype == "quantity":
        assert isinstance(v, QuantityValue)
        value, system, code, unit = row[2:6]
        if not number_relation(v.prefix, v.value, v.low, v.high, value, every, some):
            return False
        if v.system is not None and system != v.system:
            return False
        if v.code is not None:
            return code == v.code if v.system is not None else v.code in (code, unit)
        return True
    if ptype == "uri":
        assert isinstance(v, UriValue)
        if modifier == "below":
            return starts_with(row[2], v.uri, every)
        if modifier == "above":
            return row[2] in uri_ancestors(v.uri)
        return row[2] == v.uri
    if ptype == "special":
        assert isinstance(v, NearValue)
        return bool(near_relation(v, row[1], row[2], every))
    return False
