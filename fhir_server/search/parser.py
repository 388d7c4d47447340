"""Parse FHIR search query parameters into a small typed query tree.

Comma separates OR-ed values, a repeated parameter is AND-ed. Unknown parameters are
recorded in `ParsedSearch.ignored` (or raise 400 when `strict`); malformed values always
raise FhirError(400) naming the parameter and the value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fhir_server.errors import FhirError
from fhir_server.resource_types import is_resource_id
from fhir_server.search import values as V
from fhir_server.search.registry import (
    COLUMN_PARAMS,
    SearchParamDef,
    all_resource_types,
    get_param,
    params_for,
    patient_compartment,
    reference_params,
)
from fhir_server.search.terms import (
    DATE_PREFIXES,
    CompositeValue,
    DateValue,
    NearValue,
    NumberValue,
    QuantityValue,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
    split_escaped,
    split_prefix,
    unescape,
)

DEFAULT_COUNT = 20
MAX_COUNT = 1000
MAX_CHAIN_DEPTH = 4
SUMMARY_MODES = frozenset({"true", "false", "text", "data", "count"})
TOTAL_MODES = frozenset({"none", "estimate", "accurate"})
# Result-shaping or transport parameters handled elsewhere; accepted silently.
PASSTHROUGH = frozenset({"_format", "_pretty"})
SORTABLE_TYPES = frozenset({"string", "token", "reference", "date", "number", "quantity", "uri"})


@dataclass(frozen=True)
class SearchLimits:
    """Limits on one search (settings FHIR_SERVER_MAX_CHAIN_DEPTH,
    FHIR_SERVER_MAX_SEARCH_VALUES, FHIR_SERVER_MAX_PAGE_SIZE)."""

    max_chain_depth: int = MAX_CHAIN_DEPTH  # chain links and _has levels in one parameter
    max_values: int = 1000  # parameters plus comma-separated (OR-ed) values
    max_count: int = MAX_COUNT


DEFAULT_LIMITS = SearchLimits()


@dataclass(frozen=True)
class ParamFilter:
    """`code[:modifier]=v1,v2` on one parameter of the searched resource."""

    param: SearchParamDef
    modifier: str | None
    values: tuple[object, ...]  # typed values from `terms`, OR-ed
    name: str = ""  # the query parameter name as given


@dataclass(frozen=True)
class MissingFilter:
    """`code:missing=true|false`."""

    param: SearchParamDef
    missing: bool


@dataclass(frozen=True)
class ChainFilter:
    """`ref[:Type].inner=...`: the reference points to a resource matching `inner`."""

    param: SearchParamDef
    inner: dict[str, Filter]  # target type -> filter evaluated on the target


@dataclass(frozen=True)
class HasFilter:
    """`_has:Src:ref:inner=...`: some Src resource whose `ref` points here matches `inner`."""

    source_type: str
    param: SearchParamDef
    inner: Filter


@dataclass(frozen=True)
class AnyFilter:
    """OR of filters (compartment membership)."""

    options: tuple[Filter, ...]


Filter = ParamFilter | MissingFilter | ChainFilter | HasFilter | AnyFilter


@dataclass(frozen=True)
class Include:
    """`_include=Src:param[:Target]` or `_revinclude=...`; param None means `*`."""

    source_type: str | None
    param: str | None
    target_type: str | None
    iterate: bool
    reverse: bool


@dataclass(frozen=True)
class SortKey:
    """One `_sort` key: a parameter (or `_id` / `_lastUpdated`) and its direction."""

    code: str
    param_type: str
    descending: bool


@dataclass
class ParsedSearch:
    """The typed query: filters are AND-ed."""

    types: tuple[str, ...] | None  # None: every type (system search without _type)
    filters: list[Filter] = field(default_factory=list)
    includes: list[Include] = field(default_factory=list)
    sort: list[SortKey] = field(default_factory=list)
    count: int = DEFAULT_COUNT
    total: str | None = None  # none | estimate | accurate | None (server default)
    summary: str | None = None
    elements: tuple[str, ...] | None = None
    cursor: str | None = None
    ignored: list[tuple[str, str, str]] = field(default_factory=list)  # name, value, why
    self_params: list[tuple[str, str]] = field(default_factory=list)

    @property
    def revincludes(self) -> list[Include]:
        """The `_revinclude` entries."""
        return [i for i in self.includes if i.reverse]


def _bad(name: str, value: str, why: str) -> FhirError:
    return FhirError(400, "invalid", f"Invalid search parameter {name}={value!r}: {why}",
                     expression=name)


def parse_search(res_type: str | None, params: list[tuple[str, str]], *, strict: bool,
                 base_url: str | None = None,
                 limits: SearchLimits = DEFAULT_LIMITS) -> ParsedSearch:
    """Parse query parameters for a type-level (res_type) or system-level (None) search."""
    _check_size(params, limits)
    types: tuple[str, ...] | None = (res_type,) if res_type else None
    if res_type is None:
        for name, value in params:
            if name == "_type":
                requested = tuple(t.strip() for t in value.split(",") if t.strip())
                for t in requested:
                    if t not in all_resource_types():
                        raise _bad(name, value, f"unknown resource type {t}")
                types = tuple(dict.fromkeys((types or ()) + requested))
    elif res_type not in all_resource_types():
        raise FhirError(404, "not-supported", f"Unknown resource type {res_type}")
    out = ParsedSearch(types=types)
    ctx = _Context(base_url.rstrip("/") if base_url else None, limits)
    for name, value in params:
        if name == "_type" and res_type is None:
            out.self_params.append((name, value))
            continue
        if name in PASSTHROUGH:
            continue
        if name.startswith("_") and _control(out, name, value, strict, limits):
            continue
        try:
            flt = ctx.filter(types, name, value, depth=0)
        except _Unknown as exc:
            if strict:
                raise FhirError(400, "not-supported",
                                f"Unknown or unsupported search parameter {name!r}: {exc}",
                                expression=name) from None
            out.ignored.append((name, value, str(exc)))
            continue
        except FhirError as exc:  # a chain or _has names its inner part: name the whole one
            for issue in exc.issues:
                issue.expression = [name]
            raise
        out.filters.append(flt)
        out.self_params.append((name, value))
    return out


class _Unknown(Exception):
    """A parameter name (or modifier) this server does not know for the type."""


def _check_size(params: list[tuple[str, str]], limits: SearchLimits) -> None:
    """400 `too-costly` for a search with more parameters and OR-ed values than allowed."""
    size = 0
    for name, value in params:
        size += 1 + value.count(",")
        if size > limits.max_values:
            raise FhirError(400, "too-costly", f"The search has more than {limits.max_values} "
                            "parameters and comma-separated values; split it into several "
                            "searches", expression=name)


def _control(out: ParsedSearch, name: str, value: str, strict: bool,
             limits: SearchLimits = DEFAULT_LIMITS) -> bool:
    """Handle a result-control parameter; False when `name` is not one."""
    if name == "_count":
        try:
            n = int(value)
        except ValueError:
            raise _bad(name, value, "not an integer") from None
        if n < 0:
            raise _bad(name, value, "must not be negative")
        out.count = min(n, limits.max_count)
    elif name == "_total":
        if value not in TOTAL_MODES:
            raise _bad(name, value, "expected none, estimate or accurate")
        out.total = value
    elif name == "_summary":
        if value not in SUMMARY_MODES:
            raise _bad(name, value, "expected true, false, text, data or count")
        out.summary = value
    elif name == "_elements":
        out.elements = tuple(e.strip() for e in value.split(",") if e.strip())
    elif name == "_cursor":
        out.cursor = value
        return True
    elif name == "_sort":
        out.sort = _parse_sort(out.types, name, value, out, strict)
    elif name.startswith(("_include", "_revinclude")):
        inc = _parse_include(out.types, name, value, strict)
        if inc is None:
            out.ignored.append((name, value, "unknown include"))
            return True
        out.includes.append(inc)
    else:
        return False
    out.self_params.append((name, value))
    return True


def _common_param(types: tuple[str, ...] | None, code: str) -> SearchParamDef | None:
    """The parameter `code` when every searched type has it with the same type."""
    if types is None:  # a parameter of every type: Patient has them all (Resource-*)
        p = get_param("Patient", code)
        return p if p is not None and (p.url.endswith(f"Resource-{code.lstrip('_')}")) \
            else None
    defs = [get_param(t, code) for t in types]
    if not defs or any(d is None for d in defs):
        return None
    first = defs[0]
    assert first is not None
    if any(d.type != first.type for d in defs if d is not None):
        return None
    if len(defs) == 1:
        return first
    targets = tuple(dict.fromkeys(t for d in defs if d is not None for t in d.targets))
    return SearchParamDef(code=first.code, type=first.type, base=first.base, url=first.url,
                          description=first.description, targets=targets,
                          branches=first.branches, component_types=first.component_types,
                          modifiers=first.modifiers)


def _parse_sort(types: tuple[str, ...] | None, name: str, value: str, out: ParsedSearch,
                strict: bool) -> list[SortKey]:
    keys = []
    for raw in value.split(","):
        raw = raw.strip()
        if not raw:
            continue
        desc = raw.startswith("-")
        code = raw.lstrip("-")
        if code in COLUMN_PARAMS:
            keys.append(SortKey(code, "column", desc))
            continue
        p = _common_param(types, code)
        if p is None or p.type not in SORTABLE_TYPES:
            if strict:
                raise FhirError(400, "not-supported", f"Cannot sort on {code!r}",
                                expression=name)
            out.ignored.append((name, raw, "unknown or unsortable parameter"))
            continue
        keys.append(SortKey(code, p.type, desc))
    return keys


def _parse_include(types: tuple[str, ...] | None, name: str, value: str,
                   strict: bool) -> Include | None:
    base, colon, mod = name.partition(":")
    if base not in ("_include", "_revinclude") or (colon and mod not in ("iterate", "recurse")):
        raise _bad(name, value, "unknown include modifier")
    reverse = base == "_revinclude"
    iterate = mod in ("iterate", "recurse")
    if value == "*":
        return Include(None, None, None, iterate, reverse)
    parts = value.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise _bad(name, value, "expected SourceType:param[:TargetType]")
    src, code = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    problem = None
    if src not in all_resource_types():
        problem = f"unknown resource type {src}"
    elif not reverse and not iterate and types is not None and src not in types:
        problem = f"{src} is not a searched type"
    elif code != "*" and code not in reference_params(src):
        problem = f"{src} has no reference parameter {code}"
    elif target is not None and target not in all_resource_types():
        problem = f"unknown target type {target}"
    if problem:
        if strict:
            raise FhirError(400, "not-supported", f"Invalid {name}={value!r}: {problem}",
                            expression=name)
        return None
    return Include(src, None if code == "*" else code, target, iterate, reverse)


class _Context:
    """Filter parsing with the server base URL (for absolute references to ourselves)."""

    def __init__(self, base_url: str | None, limits: SearchLimits = DEFAULT_LIMITS) -> None:
        self.base_url = base_url
        self.limits = limits

    def filter(self, types: tuple[str, ...] | None, name: str, value: str,
               depth: int) -> Filter:
        if depth > self.limits.max_chain_depth:
            raise _bad(name, value, "chain too deep")
        if name == "_has" or name.startswith("_has:"):
            return self._has(types, name, value, depth)
        head, dot, rest = name.partition(".")
        code, _, modifier = head.partition(":")
        if code in COLUMN_PARAMS:
            if dot:
                raise _Unknown(f"chain not supported on {code}")
            if modifier and (code, modifier) != ("_id", "not"):
                raise _bad(name, value, f"modifier :{modifier} is not supported on {code}")
            p = get_param(types[0] if types else "Patient", code)
            assert p is not None
            return ParamFilter(p, modifier or None, self._values(p, None, name, value), name)
        p = _common_param(types, code)
        if p is None or p.type == "special" and code != "near":
            raise _Unknown(f"unknown parameter {code}")
        if dot:
            return self._chain(p, modifier or None, name, rest, value, depth)
        if modifier == "missing":
            if value not in ("true", "false"):
                raise _bad(name, value, "expected true or false")
            return MissingFilter(p, value == "true")
        if modifier and modifier not in p.modifiers:
            raise _bad(name, value, f"modifier :{modifier} is not supported on {p.type}")
        return ParamFilter(p, modifier or None, self._values(p, modifier or None, name, value),
                           name)

    def _chain(self, p: SearchParamDef, modifier: str | None, name: str, rest: str,
               value: str, depth: int) -> Filter:
        if p.type != "reference":
            raise _bad(name, value, f"{p.code} is not a reference parameter and cannot chain")
        if modifier:
            if modifier not in all_resource_types():
                raise _bad(name, value, f"unknown resource type {modifier}")
            targets: tuple[str, ...] = (modifier,)
        else:
            targets = p.targets or all_resource_types()
        inner: dict[str, Filter] = {}
        inner_code = rest.partition(".")[0].partition(":")[0]
        for t in targets:
            if inner_code in COLUMN_PARAMS or inner_code.startswith("_has") or \
                    inner_code in params_for(t):
                inner[t] = self.filter((t,), rest, value, depth + 1)
        if not inner:
            raise _bad(name, value, f"no target type of {p.code} has a parameter {inner_code}")
        return ChainFilter(p, inner)

    def _has(self, types: tuple[str, ...] | None, name: str, value: str,
             depth: int) -> Filter:
        parts = name.split(":", 3)
        if len(parts) != 4 or types is None:
            raise _bad(name, value, "expected _has:Type:reference:parameter on a type search")
        _, src, ref, rest = parts
        if src not in all_resource_types():
            raise _bad(name, value, f"unknown resource type {src}")
        p = reference_params(src).get(ref)
        if p is None:
            raise _bad(name, value, f"{src} has no reference parameter {ref}")
        if p.targets and not any(t in p.targets for t in types):
            raise _bad(name, value, f"{src}.{ref} cannot point to {','.join(types)}")
        return HasFilter(src, p, self.filter((src,), rest, value, depth + 1))

    def _values(self, p: SearchParamDef, modifier: str | None, name: str,
                value: str) -> tuple[object, ...]:
        if value == "":
            raise _bad(name, value, "empty value")
        out = []
        for raw in split_escaped(value, ","):
            try:
                out.append(self._value(p.type, p, modifier, raw))
            except ValueError as exc:
                raise _bad(name, value, str(exc)) from None
        return tuple(out)

    def _value(self, ptype: str, p: SearchParamDef, modifier: str | None, raw: str) -> object:
        if p.code == "_id":
            return TokenValue(None, unescape(raw), False)
        if p.code == "_lastUpdated" or ptype == "date":
            prefix, rest = split_prefix(raw, DATE_PREFIXES)
            low, high = V.date_range(rest)
            return DateValue(prefix, low, high)
        if ptype == "string":
            text = unescape(raw)
            return StringValue(V.normalize_string(text), text)
        if ptype == "token":
            return _token_value(modifier, raw)
        if ptype == "reference":
            return self._reference_value(p, modifier, raw)
        if ptype == "number":
            prefix, rest = split_prefix(raw, DATE_PREFIXES)
            num = V.parse_decimal(rest)
            low, high = V.decimal_range(num)
            return NumberValue(prefix, float(num), low, high)
        if ptype == "quantity":
            parts = split_escaped(raw, "|")
            if len(parts) > 3:
                raise ValueError("expected [prefix]number|system|code")
            prefix, rest = split_prefix(parts[0], DATE_PREFIXES)
            num = V.parse_decimal(rest)
            low, high = V.decimal_range(num)
            system = unescape(parts[1]) or None if len(parts) > 1 else None
            code = unescape(parts[2]) or None if len(parts) > 2 else None
            return QuantityValue(prefix, float(num), low, high, system, code)
        if ptype == "uri":
            return UriValue(unescape(raw))
        if ptype == "composite":
            comps = split_escaped(raw, "$")
            if len(comps) != len(p.component_types):
                raise ValueError(f"expected {len(p.component_types)} components joined by $")
            return CompositeValue(tuple(self._value(t, p, None, c)
                                        for t, c in zip(p.component_types, comps, strict=True)))
        if ptype == "special" and p.code == "near":
            return _near_value(raw)
        raise ValueError(f"unsupported parameter type {ptype}")

    def _reference_value(self, p: SearchParamDef, modifier: str | None,
                         raw: str) -> ReferenceValue:
        if modifier == "identifier":
            tok = _token_value(None, raw)
            return ReferenceValue(None, None, None, tok.system, tok.code)
        text = unescape(raw)
        if self.base_url and text.startswith(self.base_url + "/"):
            text = text[len(self.base_url) + 1:]
        if "://" in text or text.startswith("urn:"):
            return ReferenceValue(None, None, text.split("|")[0], None, None)
        parts = text.split("/")
        if len(parts) == 4 and parts[2] == "_history" and is_resource_id(parts[3]):
            parts = parts[:2]
        if not is_resource_id(parts[-1]):
            raise ValueError(f"{parts[-1]!r} is not a resource id (1-64 of A-Z a-z 0-9 - .)")
        if len(parts) == 1:
            rtype = modifier if modifier else None
            return ReferenceValue(rtype, parts[0], None, None, None)
        if len(parts) == 2 and parts[0] in all_resource_types():
            if modifier and modifier != parts[0]:
                raise ValueError(f"type {parts[0]} conflicts with modifier :{modifier}")
            # Also match references stored as absolute URLs of this server.
            own = f"{self.base_url}/{parts[0]}/{parts[1]}" if self.base_url else None
            return ReferenceValue(parts[0], parts[1], own, None, None)
        raise ValueError("expected Type/id, id or an absolute URL")


def _token_value(modifier: str | None, raw: str) -> object:
    if modifier == "text":
        text = unescape(raw)
        return StringValue(V.normalize_string(text), text)
    if modifier in ("in", "not-in"):
        return UriValue(unescape(raw))
    if modifier == "of-type":
        parts = split_escaped(raw, "|")
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise ValueError("expected type-system|type-code|value")
        return TokenValue(f"{unescape(parts[0])}|{unescape(parts[1])}", unescape(parts[2]),
                          True)
    parts = split_escaped(raw, "|")
    if len(parts) == 1:
        return TokenValue(None, unescape(parts[0]), False)
    if len(parts) > 2:
        raise ValueError("expected [system|]code")
    system, code = unescape(parts[0]), unescape(parts[1])
    if not system and not code:
        raise ValueError("empty token")
    # "|code": no system; "system|": any code in the system.
    return TokenValue(system or None, code or None, True)


_DISTANCE_UNITS = {"km": 1.0, "m": 0.001, "mi": 1.609344, "[mi_i]": 1.609344}


def _near_value(raw: str) -> NearValue:
    parts = split_escaped(raw, "|")
    if len(parts) < 2:
        raise ValueError("expected latitude|longitude[|distance[|units]]")
    lat, lon = float(V.parse_decimal(parts[0])), float(V.parse_decimal(parts[1]))
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ValueError("latitude/longitude out of range")
    dist = float(V.parse_decimal(parts[2])) if len(parts) > 2 and parts[2] else 1.0
    unit = parts[3] if len(parts) > 3 and parts[3] else "km"
    if unit not in _DISTANCE_UNITS:
        raise ValueError(f"unknown distance unit {unit}")
    return NearValue(lat, lon, dist * _DISTANCE_UNITS[unit])


def compartment_filter(compartment: tuple[str, str], res_type: str) -> AnyFilter:
    """Membership of res_type resources in a Patient compartment, as an OR of filters."""
    comp_type, comp_id = compartment
    if comp_type != "Patient":
        raise FhirError(400, "not-supported", f"Compartment {comp_type} is not supported")
    options: list[Filter] = []
    for code in patient_compartment().get(res_type, []):
        p = get_param(res_type, code)
        if p is not None and p.type == "reference":
            value = ReferenceValue("Patient", comp_id, None, None, None)
            options.append(ParamFilter(p, None, (value,), code))
    if res_type == "Patient":
        id_param = get_param("Patient", "_id")
        assert id_param is not None
        options.append(ParamFilter(id_param, None, (TokenValue(None, comp_id, False),), "_id"))
    if not options:
        raise FhirError(400, "not-supported",
                        f"{res_type} is not in the Patient compartment")
    return AnyFilter(tuple(options))
