"""Index extraction: a resource in, typed index values per search parameter out.

Each parameter is compiled once per resource type into walker steps (plain dotted paths
from the registry) applied directly to the JSON dict; only the rare complex expressions
go through compiled fhirpathpy. Rows are plain tuples, ready for executemany.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from typing import Any

from fhir_server.search.registry import Branch, SearchParamDef, params_for
from fhir_server.search.values import (
    MAX_TIME,
    MIN_TIME,
    date_range,
    normalize_string,
)

# Composite components are stored as rows of their own type under "<code>$<index>",
# tied together by a group number; plain rows have group 0.
COMPOSITE_SEP = "$"
OF_TYPE_SUFFIX = ":of-type"

_PRIMITIVE_STRINGS = {"string", "markdown", "code", "id", "uri", "url", "canonical", "oid",
                      "uuid", "base64binary"}


@dataclass
class IndexValues:
    """Rows for each index table; every row starts with (param, grp)."""

    strings: list[tuple[str, int, str, str]] = field(default_factory=list)
    tokens: list[tuple[str, int, str | None, str | None, str | None]] = field(
        default_factory=list)
    references: list[tuple[str, int, str | None, str | None, str | None, str | None,
                           str | None]] = field(default_factory=list)
    dates: list[tuple[str, int, int, int]] = field(default_factory=list)
    numbers: list[tuple[str, int, float]] = field(default_factory=list)
    quantities: list[tuple[str, int, float, str | None, str | None, str | None]] = field(
        default_factory=list)
    uris: list[tuple[str, int, str]] = field(default_factory=list)
    coords: list[tuple[str, float, float]] = field(default_factory=list)

    def count(self) -> int:
        """Total number of rows."""
        return sum(len(v) for v in (self.strings, self.tokens, self.references, self.dates,
                                    self.numbers, self.quantities, self.uris, self.coords))


Node = tuple[Any, str | None]  # (value, FHIR type when known from a choice key)


def _walk(steps: tuple[tuple[Any, ...], ...], root: Any) -> list[Node]:
    nodes: list[Node] = [(root, None)]
    for step in steps:
        kind = step[0]
        out: list[Node] = []
        if kind == "f":
            name = step[1]
            for value, _t in nodes:
                if isinstance(value, dict):
                    child = value.get(name)
                    if child is None:
                        continue
                    if isinstance(child, list):
                        out.extend((c, None) for c in child)
                    else:
                        out.append((child, None))
        elif kind == "c":
            name, types = step[1], step[2]
            for value, _t in nodes:
                if isinstance(value, dict):
                    for t in types:
                        child = value.get(name + t)
                        if child is not None:
                            out.append((child, t))
        elif kind == "r":
            prefix = step[1] + "/"
            for value, t in nodes:
                if isinstance(value, dict):
                    ref = value.get("reference")
                    if isinstance(ref, str) and (ref.startswith(prefix) or f"/{prefix}" in ref):
                        out.append((value, t))
        else:  # "w": where(field = 'literal')
            fld, lit = step[1], step[2]
            out = [(v, t) for v, t in nodes if isinstance(v, dict) and v.get(fld) == lit]
        nodes = out
        if not nodes:
            break
    return nodes


def _cut(value: Any, n: int = 255) -> str | None:
    """Fit a value into its index column (None stays None; non-strings are stringified)."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text[:n]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def parse_reference(ref: str) -> tuple[str | None, str | None, str | None]:
    """A Reference.reference string -> (target type, target id, absolute url)."""
    if not ref or ref.startswith("#"):
        return None, None, None
    if "://" in ref or ref.startswith(("urn:", "/")):
        return None, None, ref
    parts = ref.split("/")
    if len(parts) >= 2 and parts[0][:1].isupper():
        if len(parts) == 2 or (len(parts) == 4 and parts[2] == "_history"):
            return parts[0], parts[1], None
    return None, None, ref


class _Emitter:
    """Turns typed values into rows for one parameter."""

    def __init__(self, out: IndexValues) -> None:
        self.out = out

    def emit(self, sp_type: str, param: str, grp: int, value: Any, ftype: str | None) -> None:
        handler = _HANDLERS.get(sp_type)
        if handler is not None:
            handler(self, param, grp, value, (ftype or "").lower())

    def _string(self, param: str, grp: int, v: Any, t: str) -> None:
        if isinstance(v, str):
            self.out.strings.append((param, grp, normalize_string(v), v[:2000]))
        elif isinstance(v, dict):
            parts: list[Any] = []
            for key in ("text", "family", "given", "prefix", "suffix", "line", "city",
                        "district", "state", "postalCode", "country"):
                if key in v:
                    parts.extend(_as_list(v[key]))
            for p in parts:
                if isinstance(p, str) and p:
                    self.out.strings.append((param, grp, normalize_string(p), p[:2000]))

    def _token(self, param: str, grp: int, v: Any, t: str) -> None:
        rows = self.out.tokens
        if isinstance(v, bool):
            rows.append((param, grp, None, "true" if v else "false", None))
        elif isinstance(v, (str, int)):
            rows.append((param, grp, None, _cut(v), None))
        elif isinstance(v, dict):
            if "coding" in v or ("text" in v and "value" not in v and "code" not in v):
                text = v.get("text")
                codings = v.get("coding") or []
                for c in codings:
                    if isinstance(c, dict):
                        disp = text or c.get("display")
                        rows.append((param, grp, _cut(c.get("system")), _cut(c.get("code")),
                                     normalize_string(disp) if disp else None))
                if text and not codings:
                    rows.append((param, grp, None, None, normalize_string(text)))
                elif text and codings:
                    for c in codings:
                        disp = c.get("display") if isinstance(c, dict) else None
                        if disp and disp != text:
                            rows.append((param, grp, _cut(c.get("system")), _cut(c.get("code")),
                                         normalize_string(disp)))
            elif "code" in v or t == "coding":
                disp = v.get("display")
                rows.append((param, grp, _cut(v.get("system")), _cut(v.get("code")),
                             normalize_string(disp) if disp else None))
            elif "value" in v:  # Identifier or ContactPoint
                typ = v.get("type")
                ttext = typ.get("text") if isinstance(typ, dict) else None
                rows.append((param, grp, _cut(v.get("system")), _cut(v["value"]),
                             normalize_string(ttext) if ttext else None))
                if isinstance(typ, dict):
                    for c in typ.get("coding") or []:
                        if isinstance(c, dict) and c.get("code"):
                            rows.append((param + OF_TYPE_SUFFIX, grp,
                                         _cut(f"{c.get('system', '')}|{c['code']}"),
                                         _cut(v["value"]), _cut(v.get("system"), 200)))

    def _reference(self, param: str, grp: int, v: Any, t: str) -> None:
        if isinstance(v, str):  # canonical / uri
            self.out.references.append((param, grp, *parse_reference(v), None, None))
            return
        if not isinstance(v, dict):
            return
        ref = v.get("reference")
        ident = v.get("identifier") if isinstance(v.get("identifier"), dict) else None
        rtype, rid, url = parse_reference(ref) if isinstance(ref, str) else (None, None, None)
        if rtype is None and url is None and ident is None:
            return
        isys = _cut(ident.get("system")) if ident else None
        ival = _cut(ident.get("value")) if ident else None
        if rtype is not None and (len(rtype) > 64 or len(rid or "") > 64):
            rtype, rid, url = None, None, ref
        self.out.references.append((param, grp, rtype, rid, url, isys, ival))

    def _date(self, param: str, grp: int, v: Any, t: str) -> None:
        try:
            if isinstance(v, str):
                lo, hi = date_range(v)
            elif isinstance(v, dict) and ("start" in v or "end" in v):
                lo = date_range(v["start"])[0] if v.get("start") else MIN_TIME
                hi = date_range(v["end"])[1] if v.get("end") else MAX_TIME
            elif isinstance(v, dict) and ("event" in v or "repeat" in v):
                ranges = [date_range(e) for e in v.get("event") or []]
                bounds = (v.get("repeat") or {}).get("boundsPeriod")
                if bounds:
                    ranges.append((date_range(bounds["start"])[0] if bounds.get("start")
                                   else MIN_TIME,
                                   date_range(bounds["end"])[1] if bounds.get("end")
                                   else MAX_TIME))
                if not ranges:
                    return
                lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
            else:
                return
        except (ValueError, TypeError, KeyError):
            return
        self.out.dates.append((param, grp, lo, hi))

    def _number(self, param: str, grp: int, v: Any, t: str) -> None:
        if isinstance(v, (int, float, Decimal)) and not isinstance(v, bool):
            self.out.numbers.append((param, grp, float(v)))
        elif isinstance(v, dict) and isinstance(v.get("value"), (int, float)):
            self.out.numbers.append((param, grp, float(v["value"])))

    def _quantity(self, param: str, grp: int, v: Any, t: str) -> None:
        if not isinstance(v, dict):
            return
        val = v.get("value")
        if isinstance(val, (int, float)) and not isinstance(val, bool):
            self.out.quantities.append((param, grp, float(val), _cut(v.get("system")),
                                        _cut(v.get("code") or v.get("currency"), 100),
                                        _cut(v.get("unit"), 100)))

    def _uri(self, param: str, grp: int, v: Any, t: str) -> None:
        if isinstance(v, str):
            self.out.uris.append((param, grp, v[:500]))

    def _special(self, param: str, grp: int, v: Any, t: str) -> None:
        if param == "near" and isinstance(v, dict):
            lat, lon = v.get("latitude"), v.get("longitude")
            if isinstance(lat, (int, float)) and isinstance(lon, (int, float)):
                self.out.coords.append((param, float(lat), float(lon)))


_HANDLERS: dict[str, Callable[..., None]] = {
    name: getattr(_Emitter, "_" + name)
    for name in ("string", "token", "reference", "date", "number", "quantity", "uri", "special")
}


@dataclass(frozen=True)
class _Plan:
    """A parameter compiled for extraction."""

    code: str
    sp_type: str
    branches: tuple[Branch, ...]
    fhirpath: tuple[Callable[..., list[Any]], ...]
    component_types: tuple[str, ...]


def _patient_deceased(resource: dict[str, Any]) -> list[Any]:
    flag = resource.get("deceasedBoolean")
    return [True] if flag is True or "deceasedDateTime" in resource else [False]


# Hand-written equivalents of FHIRPath branches that are on hot paths.
_NATIVE: dict[str, Callable[..., list[Any]]] = {
    "Patient.deceased.exists() and Patient.deceased != false": _patient_deceased,
}


@cache
def _compiled_fhirpath(expr: str) -> Callable[..., list[Any]]:
    if expr in _NATIVE:
        return _NATIVE[expr]
    import fhirpathpy  # imported lazily: only 3 R4 branches need it
    from fhirpathpy.models import models

    return fhirpathpy.compile(expr, models["r4"])


@dataclass(frozen=True)
class _TypePlan:
    """Extraction for one resource type, indexed by the top-level key each branch needs,
    so absent elements cost one dict lookup rather than a walk per parameter."""

    by_key: dict[str, tuple[tuple[_Plan, Branch], ...]]
    always: tuple[tuple[_Plan, Branch], ...]
    composites: tuple[_Plan, ...]
    fhirpath: tuple[_Plan, ...]


@cache
def plans_for(res_type: str) -> _TypePlan:
    """The compiled extraction plan of a resource type (cached per process)."""
    by_key: dict[str, list[tuple[_Plan, Branch]]] = {}
    always: list[tuple[_Plan, Branch]] = []
    composites, fhirpath = [], []
    for sp in params_for(res_type).values():
        if sp.is_column or not sp.branches:
            continue
        plan = _compile(sp)
        if plan.sp_type == "composite":
            composites.append(plan)
            continue
        if plan.fhirpath:
            fhirpath.append(plan)
        for branch in plan.branches:
            if not branch.steps:
                always.append((plan, branch))
            elif branch.steps[0][0] == "c":
                _kind, name, types = branch.steps[0]
                for t in types:
                    narrowed = Branch(steps=(("c", name, (t,)), *branch.steps[1:]),
                                      types=branch.types)
                    by_key.setdefault(name + t, []).append((plan, narrowed))
            else:
                by_key.setdefault(branch.steps[0][1], []).append((plan, branch))
    return _TypePlan({k: tuple(v) for k, v in by_key.items()}, tuple(always),
                     tuple(composites), tuple(fhirpath))


def _compile(sp: SearchParamDef) -> _Plan:
    walk = tuple(b for b in sp.branches if b.fhirpath is None)
    fps = tuple(_compiled_fhirpath(b.fhirpath) for b in sp.branches if b.fhirpath)
    return _Plan(sp.code, sp.type, walk, fps, sp.component_types)


def param_values(resource: dict[str, Any], code: str) -> list[Any]:
    """The raw element values search parameter `code` of the resource's type reaches
    (e.g. the Reference dicts of Task `candidate`); empty for unknown parameters."""
    sp = params_for(str(resource.get("resourceType") or "")).get(code)
    if sp is None:
        return []
    return [item for branch in sp.branches if branch.fhirpath is None
            for value, _t in _walk(branch.steps, resource) for item in _as_list(value)]


def extract_index(resource: dict[str, Any]) -> IndexValues:
    """All index rows for a resource, per its type's search parameters."""
    out = IndexValues()
    res_type = resource.get("resourceType")
    if not isinstance(res_type, str):
        return out
    emitter = _Emitter(out)
    tplan = plans_for(res_type)
    work = [pb for key in resource if key in tplan.by_key for pb in tplan.by_key[key]]
    for plan, branch in (*work, *tplan.always):
        single = branch.types[0] if len(branch.types) == 1 else None
        for value, ftype in _walk(branch.steps, resource):
            for item in _as_list(value):
                emitter.emit(plan.sp_type, plan.code, 0, item, ftype or single)
    for plan in tplan.fhirpath:
        for fp in plan.fhirpath:
            for item in _safe_eval(fp, resource):
                emitter.emit(plan.sp_type, plan.code, 0, item, None)
    for plan in tplan.composites:
        _extract_composite(plan, resource, emitter)
    return out


def _safe_eval(fp: Callable[..., list[Any]], resource: dict[str, Any]) -> Iterator[Any]:
    try:
        yield from fp(resource)
    except Exception:  # noqa: BLE001 - a bad expression must not block a write
        return


def _extract_composite(plan: _Plan, resource: dict[str, Any], emitter: _Emitter) -> None:
    """Emit a group of component rows per base element that has a value for every component."""
    grp = 0
    for base in plan.branches:
        for node, _t in _walk(base.steps, resource):
            found: list[list[tuple[Any, str | None]]] = []
            for comp_branches in base.components:
                vals: list[tuple[Any, str | None]] = []
                for cb in comp_branches:
                    for value, ftype in _walk(cb.steps, node):
                        if ftype is None and len(cb.types) == 1:
                            ftype = cb.types[0]
                        vals.extend((item, ftype) for item in _as_list(value))
                if not vals:
                    break
                found.append(vals)
            else:
                grp += 1
                for i, vals in enumerate(found):
                    param = f"{plan.code}{COMPOSITE_SEP}{i}"
                    for item, ftype in vals:
                        emitter.emit(plan.component_types[i], param, grp, item, ftype)
