"""Executing a parsed search as SQL over the resources and index tables.

Filters become `pid IN (SELECT pid FROM idx_... WHERE ...)` semi-joins (driven by the
(res_type, param, value) indexes), negations `NOT IN`. Pages use keyset cursors on the
sort keys plus pid, so links stay correct while others write. Statements per search: one
for the page, one for the total, one per `_include` / `_revinclude` parameter (per
iteration for `:iterate`), one per token `:in` / `:not-in` ValueSet lookup.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import (
    Boolean,
    Connection,
    and_,
    bindparam,
    false,
    func,
    not_,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.selectable import Select
from sqlalchemy.sql.visitors import InternalTraversal

from fhir_server.budget import RequestBudget
from fhir_server.errors import FhirError
from fhir_server.search.extract import COMPOSITE_SEP, OF_TYPE_SUFFIX
from fhir_server.search.parser import (
    AnyFilter,
    ChainFilter,
    Filter,
    HasFilter,
    Include,
    MissingFilter,
    ParamFilter,
    ParsedSearch,
    SortKey,
    parse_search,
)
from fhir_server.search.registry import reference_params
from fhir_server.search.relations import (
    date_point_relation,
    date_range_relation,
    near_relation,
    number_relation,
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
from fhir_server.storage.index_schema import (
    INDEX_TABLES,
    idx_reference,
    idx_token,
    idx_uri,
)
from fhir_server.storage.schema import resources
from fhir_server.storage.sql_limits import time_limited

# (resources alias, types the alias can hold or None for any) -> the caller's narrowing
Restrict = Callable[..., ColumnElement[bool]]
MAX_ITERATE_DEPTH = 3
DEFAULT_TOTAL_CAP = 100


@dataclass
class Row:
    """One stored resource as returned by a search."""

    pid: int
    res_type: str
    res_id: str
    version: int
    last_updated: int
    body: str


@dataclass
class SearchResult:
    """Matches (one page), included resources, the total and paging cursors."""

    matches: list[Row]
    included: list[Row] = field(default_factory=list)
    total: int | None = None
    next_cursor: str | None = None
    prev_cursor: str | None = None
    warnings: list[str] = field(default_factory=list)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class _SqlBuilder:
    """Turns filters into SQL conditions on a resources alias."""

    def __init__(self, conn: Connection, restrict: Restrict | None,
                 per_row: bool = False) -> None:
        self.conn = conn
        self.restrict = restrict
        self.per_row = per_row  # probes evaluated row by row (see _probe)
        self.now_us = int(time.time() * 1_000_000)

    def _member(self, r: Any, sub: Select, pid_col: Any, *, negate: bool,
                drive: bool) -> ColumnElement[bool]:
        """`r` is (not) among the pids `sub` selects: a pid lookup when driving the query,
        otherwise a probe correlated on pid (served by the pid indexes)."""
        if drive and not negate:
            return _PidIn(r.c.pid, sub)
        return self._probe(sub.where(pid_col == r.c.pid), negate)

    def _probe(self, sel: Select, negate: bool = False) -> ColumnElement[bool]:
        """`EXISTS (sel)`, or with `per_row` `(sel LIMIT 1) IS NOT NULL` (its first
        column is never NULL): PostgreSQL turns an EXISTS into a join over the whole set,
        the subquery with a LIMIT it keeps as a probe per row, which the adaptive plan
        needs as it walks a type in pid order and stops at the page."""
        if self.per_row:
            first = sel.limit(1).scalar_subquery()
            return first.is_(None) if negate else first.is_not(None)
        return ~sel.exists() if negate else sel.exists()

    # -- filters ---------------------------------------------------------------------------
    def conditions(self, filters: list[Filter], r: Any, res_type: str | None, *,
                   drive: bool = True) -> list[ColumnElement[bool]]:
        """AND-ed conditions on `r` of res_type, including the type itself.

        The most selective filter drives (`pid IN (index lookup by res_type, param,
        value)`, which also fixes the type); the others are probes by pid (`EXISTS ...
        WHERE pid = r.pid`). No statistics needed: each lookup can use only one index.
        With `drive=False` every filter is a probe (`r` is reached some other way, e.g.
        through a reference inside a correlated `_has`).
        """
        ranked = sorted(filters, key=_selectivity_rank)
        driver = _driver(filters) if drive else None
        conds = [self.condition(f, r, res_type, drive=f is driver) for f in ranked]
        if res_type is not None and (driver is None or isinstance(driver, AnyFilter)):
            conds.insert(0, r.c.res_type == res_type)
        return conds

    def driving_set(self, filters: list[Filter], r: Any, res_type: str) -> Any:
        """The driving lookup worth sizing before choosing a plan, as a statement, or None.

        For a search driven by `_has`: the pids of its sources' driving index lookup (the
        plain plan reads each source row, its reference and its target). For a search
        driven by a token code (`status=requested`): that lookup itself. Not for the
        selective drivers (an id, a reference, an identifier, a string), whose few rows
        are cheaper to read than to size."""
        driver = _driver(filters)
        if isinstance(driver, ParamFilter) and _selectivity_rank(driver) >= 4:
            # a broad code (a status): the plain plan materialises the whole lookup before
            # it can cut the first page
            cond = self.condition(driver, r, res_type, drive=True)
            return cond.sub if isinstance(cond, _PidIn) else None
        if not isinstance(driver, HasFilter):
            return None
        inner = _driver([driver.inner])
        if isinstance(inner, HasFilter):
            return self.driving_set([driver.inner], r, driver.source_type)
        if inner is None or _selectivity_rank(inner) < 2:
            return None  # an _id, a reference or an identifier: a few sources
        cond = self.condition(inner, r, driver.source_type, drive=True)
        return cond.sub if isinstance(cond, _PidIn) else None

    def condition(self, flt: Filter, r: Any, res_type: str | None,
                  drive: bool = False) -> ColumnElement[bool]:
        """A boolean SQL condition: resource row `r` (of res_type, if known) matches flt."""
        if isinstance(flt, AnyFilter):
            return or_(*(self.condition(f, r, res_type, drive) for f in flt.options))
        if isinstance(flt, MissingFilter):
            table = INDEX_TABLES[flt.param.type] if flt.param.type != "composite" else None
            if table is None:
                return true()
            scope = _scope_type(res_type, drive and not flt.missing)
            sub = self._scope(select(table.c.pid), table, scope, flt.param.code)
            return self._member(r, sub, table.c.pid, negate=flt.missing, drive=drive)
        if isinstance(flt, ChainFilter):
            x, sub = self._chain(flt, _scope_type(res_type, drive))
            return self._member(r, sub, x.c.pid, negate=False, drive=drive)
        if isinstance(flt, HasFilter):
            return self._has(flt, r, res_type, drive)
        return self._param(flt, r, res_type, drive)

    def _scope(self, sel: Select, table: Any, res_type: str | None, param: str) -> Select:
        sel = sel.where(table.c.param == param)
        if res_type is not None:
            sel = sel.where(table.c.res_type == res_type)
        return sel

    def _live(self, t: Any, res_type: str | None, of_type: str | None = None
              ) -> ColumnElement[bool]:
        """Live and visible rows of `t`; `res_type` adds the type to the query, `of_type`
        only tells the access narrowing which type the other conditions imply."""
        cond = t.c.deleted == false()
        if res_type is not None:
            cond = and_(t.c.res_type == res_type, cond)
        if self.restrict is not None:
            known = res_type or of_type
            cond = and_(cond, self.restrict(t, None if known is None else (known,)))
        return cond

    def _chain(self, flt: ChainFilter, res_type: str | None) -> tuple[Any, Select]:
        x = idx_reference.alias("xc")
        options = []
        for target_type, inner in flt.inner.items():
            t = resources.alias("tc")
            targets = select(t.c.res_id).where(self._live(t, None, target_type),
                                               *self.conditions([inner], t, target_type))
            options.append(and_(x.c.target_type == target_type, x.c.target_id.in_(targets)))
        sel = select(x.c.pid).where(or_(*options))
        return x, self._scope(sel, x, res_type, flt.param.code)

    def _has(self, flt: HasFilter, r: Any, res_type: str | None,
             drive: bool) -> ColumnElement[bool]:
        if drive and res_type is not None:
            # by pid like every driver (the targets' pids through the (res_type, res_id)
            # index), so the planner reads the set rather than walking the whole type in
            # pid order looking each row up in it
            t = resources.alias()
            return _PidIn(r.c.pid, select(t.c.pid).where(
                t.c.res_type == res_type, t.c.res_id.in_(self._has_targets(flt, res_type))))
        x = idx_reference.alias()
        s = resources.alias()
        target_type = res_type if res_type is not None else r.c.res_type
        # A probe for one target: its few referencing sources, each checked by pid (an
        # uncorrelated source set here would be evaluated again for every target).
        return self._probe(select(x.c.pid).select_from(x.join(s, s.c.pid == x.c.pid)).where(
            x.c.target_id == r.c.res_id, x.c.target_type == target_type,
            x.c.res_type == flt.source_type, x.c.param == flt.param.code,
            self._live(s, None, flt.source_type),
            *self.conditions([flt.inner], s, flt.source_type, drive=False)))

    def _has_targets(self, flt: HasFilter, target_type: str) -> Select:
        """The sources drive, joined to their references by pid: the ids of the matching
        targets. (No condition on x.res_type: the source's pid implies it, and with one the
        planner scans every reference of that type and parameter instead.)"""
        x = idx_reference.alias()
        s = resources.alias()
        return select(x.c.target_id).select_from(s.join(x, x.c.pid == s.c.pid)).where(
            self._live(s, None, flt.source_type),
            *self.conditions([flt.inner], s, flt.source_type),
            x.c.param == flt.param.code, x.c.target_type == target_type)

    def _param(self, flt: ParamFilter, r: Any, res_type: str | None,
               drive: bool) -> ColumnElement[bool]:
        p = flt.param
        if p.code == "_id":
            ids = r.c.res_id.in_([v.code for v in flt.values])  # type: ignore[attr-defined]
            return not_(ids) if flt.modifier == "not" else ids
        if p.code == "_lastUpdated":
            return or_(*(date_point_relation(v, r.c.last_updated, self.now_us, and_, or_)
                         for v in flt.values))
        if p.type == "composite":
            first, sub = self._composite(flt, _scope_type(res_type, drive))
            return self._member(r, sub, first.c.pid, negate=False, drive=drive)
        if p.type == "token" and flt.modifier in ("in", "not-in"):
            sub = self._valueset_subquery(
                flt, _scope_type(res_type, drive and flt.modifier == "in"))
            return self._member(r, sub, idx_token.c.pid, negate=flt.modifier == "not-in",
                           drive=drive)
        table = INDEX_TABLES[p.type]
        param = p.code + OF_TYPE_SUFFIX if flt.modifier == "of-type" else p.code
        conds = [c for v in flt.values for c in self.value_conds(p.type, flt.modifier, v, table)]
        negate = flt.modifier == "not"
        if drive and not negate and len(conds) > 1:
            # One index-driven SELECT per alternative (a UNION ALL), rather than an OR that
            # would defeat the (res_type, param, value) index.
            return _PidIn(r.c.pid, union_all(*(
                self._scope(select(table.c.pid), table, res_type, param).where(c)
                for c in conds)))
        scope = _scope_type(res_type, drive and not negate)
        sub = self._scope(select(table.c.pid), table, scope, param).where(or_(*conds))
        return self._member(r, sub, table.c.pid, negate=negate, drive=drive)

    def _composite(self, flt: ParamFilter, res_type: str | None) -> tuple[Any, Select]:
        p = flt.param
        options = []
        first_alias = None
        aliases = []
        for i, ctype in enumerate(p.component_types):
            a = INDEX_TABLES[ctype].alias(f"c{i}")
            aliases.append(a)
        first_alias = aliases[0]
        for v in flt.values:
            assert isinstance(v, CompositeValue)
            options.append(and_(*(self.value_cond(ctype, None, part, aliases[i])
                                  for i, (ctype, part) in enumerate(
                                      zip(p.component_types, v.parts, strict=True)))))
        sel = select(first_alias.c.pid).select_from(first_alias)
        for i, a in enumerate(aliases[1:], start=1):
            sel = sel.join(a, and_(a.c.pid == first_alias.c.pid, a.c.grp == first_alias.c.grp,
                                   a.c.param == f"{p.code}{COMPOSITE_SEP}{i}"))
        sel = self._scope(sel, first_alias, res_type, f"{p.code}{COMPOSITE_SEP}0")
        return first_alias, sel.where(or_(*options))

    def _valueset_subquery(self, flt: ParamFilter, res_type: str | None) -> Select:
        conds: list[ColumnElement[bool]] = []
        for v in flt.values:
            assert isinstance(v, UriValue)
            systems, codes = self._expand_valueset(v.uri, flt.name)
            conds.extend(idx_token.c.system == s for s in systems)
            for system, code_set in codes.items():
                conds.append(and_(idx_token.c.system == system, idx_token.c.code.in_(code_set)))
        sel = self._scope(select(idx_token.c.pid), idx_token, res_type, flt.param.code)
        return sel.where(or_(false(), *conds))

    def _expand_valueset(self, url: str, name: str) -> tuple[list[str], dict[str, list[str]]]:
        """The systems included whole and the codes per system of a stored ValueSet."""
        u = idx_uri.alias("vu")
        vs = resources.alias("vs")
        row = self.conn.execute(
            select(vs.c.body).where(vs.c.res_type == "ValueSet", vs.c.deleted == false(),
                                    vs.c.pid.in_(select(u.c.pid).where(
                                        u.c.res_type == "ValueSet", u.c.param == "url",
                                        u.c.uri == url.split("|")[0])))
            .order_by(vs.c.pid.desc()).limit(1)).first()
        if row is None:
            raise FhirError(400, "not-found", f"ValueSet {url!r} of {name} is not known "
                            "to this server", expression=name)
        body = json.loads(row[0])
        systems: list[str] = []
        codes: dict[str, list[str]] = {}
        for c in (body.get("expansion") or {}).get("contains") or []:
            if c.get("system") and c.get("code"):
                codes.setdefault(c["system"], []).append(c["code"])
        for inc in (body.get("compose") or {}).get("include") or []:
            system = inc.get("system")
            if not system:
                continue
            concepts = inc.get("concept")
            if concepts:
                codes.setdefault(system, []).extend(c["code"] for c in concepts if "code" in c)
            elif not inc.get("filter") and not inc.get("valueSet"):
                systems.append(system)
        return systems, codes

    # -- values ----------------------------------------------------------------------------
    def value_conds(self, ptype: str, modifier: str | None, v: object,
                    t: Any) -> list[ColumnElement[bool]]:
        """Alternative conditions (OR) for one value; each can use an index on its own."""
        if isinstance(v, ReferenceValue) and v.target_type is not None and v.url is not None:
            return [and_(t.c.target_id == v.target_id, t.c.target_type == v.target_type),
                    t.c.url == v.url]
        return [self.value_cond(ptype, modifier, v, t)]

    def value_cond(self, ptype: str, modifier: str | None, v: object,
                   t: Any) -> ColumnElement[bool]:
        """The condition for one search value on an index table alias."""
        if ptype == "string":
            assert isinstance(v, StringValue)
            if modifier == "exact":
                return and_(starts_with(t.c.value_norm, v.norm, and_), t.c.value_exact == v.exact)
            if modifier == "contains":
                return t.c.value_norm.like(f"%{_like_escape(v.norm)}%", escape="\\")
            return starts_with(t.c.value_norm, v.norm, and_)
        if ptype == "token":
            if isinstance(v, StringValue):  # :text
                return starts_with(t.c.text, v.norm, and_)
            assert isinstance(v, TokenValue)
            conds = []
            if v.code is not None:
                conds.append(t.c.code == v.code)
            if v.explicit_system:
                conds.append(t.c.system == v.system if v.system is not None
                             else t.c.system.is_(None))
            return and_(*conds)
        if ptype == "reference":
            assert isinstance(v, ReferenceValue)
            if v.ident_value is not None or v.ident_system is not None:
                conds = []
                if v.ident_value is not None:
                    conds.append(t.c.ident_value == v.ident_value)
                if v.ident_system is not None:
                    conds.append(t.c.ident_system == v.ident_system)
                return and_(*conds)
            if v.target_type is not None:
                local = and_(t.c.target_id == v.target_id, t.c.target_type == v.target_type)
                return local if v.url is None else or_(local, t.c.url == v.url)
            if v.url is not None:
                return t.c.url == v.url
            return t.c.target_id == v.target_id
        if ptype == "date":
            assert isinstance(v, DateValue)
            return date_range_relation(v, t.c.low, t.c.high, self.now_us, and_, or_)
        if ptype == "number":
            assert isinstance(v, NumberValue)
            return number_relation(v.prefix, v.value, v.low, v.high, t.c.value, and_, or_)
        if ptype == "quantity":
            assert isinstance(v, QuantityValue)
            cond = number_relation(v.prefix, v.value, v.low, v.high, t.c.value, and_, or_)
            if v.system is not None:
                cond = and_(cond, t.c.system == v.system)
            if v.code is not None:
                cond = and_(cond, t.c.code == v.code) if v.system is not None else and_(
                    cond, or_(t.c.code == v.code, t.c.unit == v.code))
            return cond
        if ptype == "uri":
            assert isinstance(v, UriValue)
            if modifier == "below":
                return starts_with(t.c.uri, v.uri, and_)
            if modifier == "above":
                return t.c.uri.in_(uri_ancestors(v.uri))
            return t.c.uri == v.uri
        if ptype == "special":
            assert isinstance(v, NearValue)
            return near_relation(v, t.c.latitude, t.c.longitude, and_)
        raise FhirError(400, "not-supported", f"Unsupported search type {ptype}")


_NO_DRIVE = 5


def _is_id_filter(flt: Filter) -> bool:
    return isinstance(flt, ParamFilter) and flt.param.code == "_id" and flt.modifier is None


def _driver(filters: list[Filter]) -> Filter | None:
    """The filter whose index lookup drives the query: the most selective by rank; none
    with an `_id` filter (the (res_type, res_id) unique index drives) or probes only."""
    if any(_is_id_filter(f) for f in filters):
        return None
    ranked = sorted(filters, key=_selectivity_rank)
    return next((f for f in ranked if _selectivity_rank(f) < _NO_DRIVE), None)


def _selectivity_rank(flt: Filter) -> int:
    """A static guess of how selective a filter is (lower: fewer rows), to pick the driver."""
    if isinstance(flt, ParamFilter):
        p = flt.param
        if flt.modifier in ("not", "not-in") or p.code == "_lastUpdated":
            return _NO_DRIVE
        if p.code == "_id":
            return 0
        if p.type == "reference" or "identifier" in p.code:
            return 1
        if p.type in ("string", "uri", "composite"):
            return 2
        if p.type in ("date", "number", "quantity", "special"):
            return 3
        return 4
    if isinstance(flt, MissingFilter):
        return 4 if not flt.missing else _NO_DRIVE
    if isinstance(flt, AnyFilter):
        return max((_selectivity_rank(f) for f in flt.options), default=_NO_DRIVE)
    return 3  # chains and _has


def _scope_type(res_type: str | None, drive: bool) -> str | None:
    """Index lookups that drive a query filter on res_type (leading index column); probes
    by pid leave it out so the planner can only pick the (pid, ...) index."""
    return res_type if drive else None


class _PidIn(ColumnElement[bool]):
    """`pid IN (subquery)`; on PostgreSQL `pid = ANY(ARRAY(subquery))`. With IN, PostgreSQL
    hashes every driving pid, joins each one and sorts them all before the LIMIT; with the
    array it reads the resources in primary-key order and stops at the page size (measured:
    5.9 ms -> 0.4 ms for 592 requested Tasks)."""

    inherit_cache = True
    type = Boolean()
    _is_implicitly_boolean = True  # a condition: no `= 1` added where booleans are integers
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement),
                           ("sub", InternalTraversal.dp_clauseelement)]

    def __init__(self, column: Any, sub: Any) -> None:
        self.column = column
        self.sub = sub


@compiles(_PidIn)
def _pid_in_default(element: _PidIn, compiler: Any, **kw: Any) -> str:
    column = compiler.process(element.column, **kw)
    return f"{column} IN {compiler.process(element.sub.scalar_subquery(), **kw)}"


@compiles(_PidIn, "postgresql")
def _pid_in_postgresql(element: _PidIn, compiler: Any, **kw: Any) -> str:
    column = compiler.process(element.column, **kw)
    return f"{column} = ANY(ARRAY{compiler.process(element.sub.scalar_subquery(), **kw)})"


# -- sorting and cursors ---------------------------------------------------------------------

_SORT_COLUMN = {"string": "value_norm", "token": "code", "reference": "target_id",
                "date": None, "number": "value", "quantity": "value", "uri": "uri"}


def _sort_expr(key: SortKey, r: Any, is_pg: bool) -> Any:
    if key.code == "_lastUpdated":
        return r.c.last_updated
    if key.code == "_id":
        return r.c.res_id.collate("C") if is_pg else r.c.res_id
    table = INDEX_TABLES[key.param_type]
    if key.param_type == "date":
        col = table.c.high if key.descending else table.c.low
    else:
        col = table.c[_SORT_COLUMN[key.param_type]]
    agg = func.max(col) if key.descending else func.min(col)
    return (select(agg).where(table.c.pid == r.c.pid, table.c.param == key.code)
            .scalar_subquery())


def encode_cursor(direction: str, values: list[Any], pid: int, sort_sig: str = "") -> str:
    """An opaque page cursor: the sort key values and pid of a boundary row."""
    raw = json.dumps({"d": direction, "k": values, "p": pid, "s": sort_sig},
                     separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(token: str, sort_sig: str = "") -> tuple[str, list[Any], int]:
    """Inverse of encode_cursor; FhirError(400) on a damaged cursor or one made for
    another `_sort`."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        direction, values, pid = data["d"], data["k"], int(data["p"])
        if direction not in ("n", "p") or not isinstance(values, list):
            raise ValueError
        if data.get("s", "") != sort_sig:
            raise ValueError
        return direction, values, pid
    except (ValueError, KeyError, TypeError):
        raise FhirError(400, "invalid", f"Invalid paging cursor _cursor={token!r}",
                        expression="_cursor") from None


def _keyset(exprs: list[tuple[Any, bool]], values: list[Any], pid_col: Any, pid: int,
            backwards: bool) -> ColumnElement[bool]:
    """Rows strictly after (or before, when backwards) the boundary row in sort order.

    Order per key: non-null values ascending/descending, nulls last; then pid ascending.
    """
    clauses = []
    prefix: list[ColumnElement[bool]] = []
    for (expr, desc), val in zip(exprs, values, strict=True):
        if val is None:
            eq = expr.is_(None)
            after = false() if not backwards else expr.is_not(None)
        else:
            eq = expr == val
            forward_gt = expr < val if desc else expr > val
            backward_lt = expr > val if desc else expr < val
            after = or_(forward_gt, expr.is_(None)) if not backwards else backward_lt
        clauses.append(and_(*prefix, after))
        prefix.append(eq)
    clauses.append(and_(*prefix, pid_col < pid if backwards else pid_col > pid))
    return or_(*clauses)


# -- execution -------------------------------------------------------------------------------

_BODY_ROWS = resources.alias("rb")
# Built once (a search runs it for every page): by primary key, live rows only.
_BODIES = (select(_BODY_ROWS.c.pid, _BODY_ROWS.c.res_type, _BODY_ROWS.c.res_id,
                  _BODY_ROWS.c.version, _BODY_ROWS.c.last_updated, _BODY_ROWS.c.body)
           .where(_BODY_ROWS.c.pid.in_(bindparam("pids", expanding=True)),
                  _BODY_ROWS.c.deleted == false()))


def _bodies(conn: Connection, pids: list[int]) -> dict[int, Row]:
    """The rows of these pids (one statement, by primary key)."""
    if not pids:
        return {}
    recs = conn.execute(_BODIES, {"pids": list(pids)}).all()
    return {rec.pid: _row(rec) for rec in recs}


def _row(rec: Any) -> Row:
    return Row(rec.pid, rec.res_type, rec.res_id, rec.version, rec.last_updated, rec.body)


def _json_value(v: Any) -> Any:
    return v if v is None or isinstance(v, (int, float, str)) else str(v)


def where_clause(conn: Connection, parsed: ParsedSearch, r: Any,
                 restrict: Restrict | None, *, drive: bool = True) -> ColumnElement[bool]:
    """The full match condition of a parsed search on resources alias `r`; with
    `drive=False` every filter is a probe on `r`, row by row (`r` is walked in pid order)."""
    b = _SqlBuilder(conn, restrict, per_row=not drive)
    cond: ColumnElement[bool] = r.c.deleted == false()
    if restrict is not None:
        cond = and_(cond, restrict(r, parsed.types))
    if parsed.types is None:
        return and_(cond, *b.conditions(parsed.filters, r, None, drive=drive))
    per_type = [and_(*b.conditions(parsed.filters, r, t, drive=drive)) for t in parsed.types]
    return and_(cond, or_(*per_type))


def _total(conn: Connection, parsed: ParsedSearch, r: Any,
           where: ColumnElement[bool]) -> int | None:
    """Bundle.total: exact for `accurate`, `estimate`, `_summary=count` and `_count=0` (a
    request for the count alone, e.g. fhirpy's `count()`); none for `none`; by default exact
    up to DEFAULT_TOTAL_CAP matches and left out above (bounded cost)."""
    count_only = parsed.summary == "count" or parsed.count == 0
    if parsed.total == "none" and not count_only:
        return None
    if parsed.total in ("accurate", "estimate") or count_only:
        return conn.execute(select(func.count()).select_from(r).where(where)).scalar()
    capped = select(r.c.pid).where(where).limit(DEFAULT_TOTAL_CAP + 1).subquery()
    n = conn.execute(select(func.count()).select_from(capped)).scalar()
    return n if n is not None and n <= DEFAULT_TOTAL_CAP else None


@dataclass(frozen=True)
class ScanPlan:
    """When a page is found by scanning its type in pid order instead (see _scan_page).

    The plain plan reads the whole driving set before it can cut a page: every source of a
    `_has` (its row, its reference, its target), every entry of a broad code's lookup
    (`status=requested`). When that set is large, walking the type in pid order with every
    filter as a probe finds a page after a few hundred rows and stops there. At 1.1M
    resources (SQLite, in process, p50, `bench/plan_bench.py`):
    `Task?owner:missing=true&status=requested` 12.6 -> 4.3 ms,
    `Patient?_has:Task:patient:status=in-progress` 55 -> 12 ms. The price: sizing where
    the gate refuses (+0.7 ms; PostgreSQL +1.8) and long windows for a sparse code (6 %:
    3.2 -> 5.2 ms; PostgreSQL 5.9 -> 13.4). Selective drivers (an id, a reference, an
    identifier, a string) are never sized; restricted callers never scan (see _execute)."""

    min_driving: int = 5000  # driving rows that make a scan worth trying
    rows_per_match: int = 20  # the scan reads at most this many rows of the type per row
    # of the page, then gives up for the plain plan (the matches are too sparse)


ADAPTIVE = ScanPlan()


def execute_search(conn: Connection, parsed: ParsedSearch, *,
                   restrict: Restrict | None = None,
                   budget: RequestBudget | None = None,
                   scan: ScanPlan | None = ADAPTIVE) -> SearchResult:
    """Run a parsed search: one page of matches, includes, total and cursors, within the
    request's budget (time, resources read, resources included; 422 past it). `scan`
    None keeps the plain plan (the differential tests compare both)."""
    budget = budget or RequestBudget()
    # a search that is too slow is named by its parameters (or its type)
    named = [name for name, _ in parsed.self_params] or list(parsed.types or ["Resource"])
    with time_limited(conn, budget, named):
        result = _execute(conn, parsed, restrict, scan)
        budget.charge_rows(len(result.matches), "_count")
        result.included = _includes(conn, parsed, result.matches, restrict, budget)
    return result


# The alias a search's matches are read from, built once: a fresh alias per search cost
# more than the statement (its column collection is set up here, before any thread uses it).
_MATCH_ROWS = resources.alias("r")
_MATCH_ROWS.c.pid  # noqa: B018


def _execute(conn: Connection, parsed: ParsedSearch, restrict: Restrict | None,
             scan: ScanPlan | None) -> SearchResult:
    is_pg = conn.dialect.name == "postgresql"
    r = _MATCH_ROWS
    where = where_clause(conn, parsed, r, restrict)
    result = SearchResult(matches=[])
    # The default bounded total on a first page comes from the page query itself: it reads
    # up to DEFAULT_TOTAL_CAP + 1 keys, then the bodies of one page by primary key, instead of
    # running every filter a second time for a count.
    total_from_page = (parsed.total not in ("none", "accurate", "estimate")
                       and parsed.summary != "count" and parsed.count > 0
                       and not parsed.cursor)
    if not total_from_page:
        result.total = _total(conn, parsed, r, where)
    if parsed.summary == "count" or parsed.count == 0:
        return result
    exprs = [(_sort_expr(k, r, is_pg), k.descending) for k in parsed.sort]
    sort_sig = ",".join(("-" if k.descending else "") + k.code for k in parsed.sort)
    backwards = False
    keyset: ColumnElement[bool] = true()
    cursor_pid = None
    if parsed.cursor:
        direction, values, cursor_pid = decode_cursor(parsed.cursor, sort_sig)
        if len(values) != len(exprs):
            raise FhirError(400, "invalid", "The paging cursor does not fit this _sort",
                            expression="_cursor")
        backwards = direction == "p"
        keyset = _keyset(exprs, values, r.c.pid, cursor_pid, backwards)
    # Forward: each key in its direction, nulls last, then pid. Backwards (a `previous`
    # page): the exact reverse, read from the cursor row towards the start, then flipped.
    order = []
    for expr, desc in exprs:
        o = expr.desc() if desc != backwards else expr.asc()
        order.append(o.nulls_first() if backwards else o.nulls_last())
    order.append(r.c.pid.desc() if backwards else r.c.pid.asc())
    key_cols = [r.c.pid] + [e.label(f"s{i}") for i, (e, _d) in enumerate(exprs)]

    def page(cols: list[Any], limit: int) -> list[Any]:
        # Not for access-restricted callers: each row walked would also be probed against
        # the caller's compartment, and most rows of a type are outside it (at 1.1M, an
        # organization's `_has` search took 2-2.5x the plain plan's time with the scan)
        if scan is not None and restrict is None and not exprs and \
                _scan_worthwhile(conn, parsed, r, scan):
            recs = _scan_page(conn, parsed, r, cols, keyset, order, limit,
                              (cursor_pid, backwards), scan)
            if recs is not None:
                return recs
        return conn.execute(select(*cols).where(where, keyset).order_by(*order)
                            .limit(limit)).all()

    if total_from_page:
        recs = page(key_cols, max(parsed.count, DEFAULT_TOTAL_CAP) + 1)
        result.total = len(recs) if len(recs) <= DEFAULT_TOTAL_CAP else None
        more = len(recs) > parsed.count
        recs = recs[:parsed.count]
        bodies = _bodies(conn, [rec.pid for rec in recs])
        # A match deleted by another writer between the two statements (PostgreSQL reads
        # each statement's latest commit) is left out rather than shown without a body.
        recs = [rec for rec in recs if rec.pid in bodies]
        result.matches = [bodies[rec.pid] for rec in recs]
    else:
        cols = [r.c.res_type, r.c.res_id, r.c.version, r.c.last_updated, r.c.body, *key_cols]
        recs = page(cols, parsed.count + 1)
        more = len(recs) > parsed.count
        recs = recs[:parsed.count]
        if backwards:
            recs.reverse()
        result.matches = [_row(rec) for rec in recs]
    if recs:
        first, last = recs[0], recs[-1]
        keys = range(len(exprs))
        if more or backwards:
            result.next_cursor = encode_cursor(
                "n", [_json_value(last._mapping[f"s{i}"]) for i in keys], last.pid, sort_sig)
        if (more and backwards) or (parsed.cursor and not backwards):
            result.prev_cursor = encode_cursor(
                "p", [_json_value(first._mapping[f"s{i}"]) for i in keys], first.pid,
                sort_sig)
    return result


def _scan_worthwhile(conn: Connection, parsed: ParsedSearch, r: Any, scan: ScanPlan) -> bool:
    """A search of one type driven by a `_has` or a broad code whose driving lookup holds
    at least `scan.min_driving` rows (counted up to there: an index range, not the set)."""
    if parsed.types is None or len(parsed.types) != 1:
        return False
    driving = _SqlBuilder(conn, None).driving_set(parsed.filters, r, parsed.types[0])
    if driving is None:
        return False
    capped = driving.limit(scan.min_driving).subquery()
    return conn.execute(select(func.count()).select_from(capped)).scalar_one() \
        >= scan.min_driving


def _scan_page(conn: Connection, parsed: ParsedSearch, r: Any, cols: list[Any],
               keyset: ColumnElement[bool], order: list[Any], limit: int,
               cursor: tuple[int | None, bool], scan: ScanPlan) -> list[Any] | None:
    """The page (pid order, `limit` rows) read by walking the type's (res_type, pid) index
    from the cursor with every filter as a probe, within a window of
    `scan.rows_per_match * limit` rows of the type. None when the window ends with fewer
    matches than the page (sparse matches: the plain plan is cheaper); a window that
    reaches the end of the type is the complete answer."""
    res_type = parsed.types[0]  # type: ignore[index]  # _scan_worthwhile checked it
    cursor_pid, backwards = cursor
    size = scan.rows_per_match * limit
    w = resources.alias("w")
    ahead = select(w.c.pid).where(w.c.res_type == res_type)
    if cursor_pid is not None:
        ahead = ahead.where(w.c.pid < cursor_pid if backwards else w.c.pid > cursor_pid)
    ahead = ahead.order_by(w.c.pid.desc() if backwards else w.c.pid.asc())
    probes = where_clause(conn, parsed, r, None, drive=False)  # callers without restrictions
    if conn.dialect.name == "postgresql":
        # The window as a subquery with a LIMIT (a fence): PostgreSQL walks it in pid
        # order and stops at the page; with the window as a pid range instead it expects
        # few matches and reads, probes and sorts the whole range.
        window = ahead.limit(size).subquery("w")
        recs = conn.execute(select(*cols).select_from(window.join(r, r.c.pid == window.c.pid))
                            .where(probes, keyset).order_by(*order).limit(limit)).all()
        if len(recs) == limit:
            return recs
        edge = conn.execute(ahead.offset(size - 1).limit(1)).scalar()
        return recs if edge is None else None
    # SQLite walks (res_type, pid) through a pid range and stops at the page (it would
    # materialise and sort a fenced window)
    edge = conn.execute(ahead.offset(size - 1).limit(1)).scalar()
    bound = true() if edge is None else (r.c.pid >= edge if backwards else r.c.pid <= edge)
    recs = conn.execute(select(*cols).where(probes, keyset, bound).order_by(*order)
                        .limit(limit)).all()
    return recs if len(recs) == limit or edge is None else None


def _includes(conn: Connection, parsed: ParsedSearch, matches: list[Row],
              restrict: Restrict | None, budget: RequestBudget) -> list[Row]:
    """Resolve _include / _revinclude (with :iterate), one statement per parameter and pass.
    Every pass reads at most what the budget has left plus one row: a wildcard include over
    a page of busy resources stops at the budget instead of reading everything."""
    if not parsed.includes or not matches:
        return []
    seen = {m.pid for m in matches}
    included: list[Row] = []
    frontier = list(matches)
    iterating = [i for i in parsed.includes if i.iterate]
    for depth in range(MAX_ITERATE_DEPTH + 1):
        # The first pass applies every include to the matches; later passes apply only the
        # :iterate ones to what the previous pass added.
        specs = parsed.includes if depth == 0 else iterating
        new: list[Row] = []
        for inc in specs:
            budget.check_time("_revinclude" if inc.reverse else "_include")
            name = "_revinclude" if inc.reverse else "_include"
            limit = budget.included_left() + 1
            rows = _include_rows(conn, inc, frontier, restrict, limit)
            fresh = [row for row in rows if row.pid not in seen]
            # a full read may have left more out: the budget cannot cover this include
            budget.charge_included(limit if len(rows) == limit else len(fresh), name)
            for row in fresh:
                seen.add(row.pid)
                new.append(row)
        included.extend(new)
        if not iterating or not new:
            break
        frontier = new
    return included


def _include_types(inc: Include) -> tuple[str, ...] | None:
    """The types an include can add (None: not known, any type): its target type, or the
    target types of its search parameter (`Task:owner` adds Organizations, PractitionerRoles
    and HealthcareServices only), so the access narrowing is built for those alone."""
    if inc.reverse:
        return (inc.source_type,) if inc.source_type else None
    if inc.target_type:
        return (inc.target_type,)
    if inc.source_type and inc.param:
        param = reference_params(inc.source_type).get(inc.param)
        if param is not None and param.targets:
            return tuple(param.targets)
    return None


def _include_rows(conn: Connection, inc: Include, sources: list[Row],
                  restrict: Restrict | None, limit: int) -> list[Row]:
    """At most `limit` live resources that `inc` adds to `sources`."""
    x = idx_reference.alias("xi")
    t = resources.alias("t")
    live = t.c.deleted == false()
    if restrict is not None:
        live = and_(live, restrict(t, _include_types(inc)))
    if not inc.reverse:
        pids = [s.pid for s in sources if inc.source_type in (None, s.res_type)]
        if not pids:
            return []
        cond = [x.c.pid.in_(pids)]  # pids fix the source type; only the pid index applies
        if inc.param is not None:
            cond.append(x.c.param == inc.param)
        else:
            codes = list(reference_params(inc.source_type).keys()) if inc.source_type else []
            if codes:
                cond.append(x.c.param.in_(codes))
        if inc.target_type is not None:
            cond.append(x.c.target_type == inc.target_type)
    else:
        by_type: dict[str, list[str]] = {}
        for s in sources:
            by_type.setdefault(s.res_type, []).append(s.res_id)
        targets = [and_(x.c.target_type == rt, x.c.target_id.in_(ids))
                   for rt, ids in by_type.items()
                   if inc.target_type in (None, rt)]
        if not targets:
            return []
        cond = [or_(*targets)]
        if inc.source_type is not None:
            cond.append(x.c.res_type == inc.source_type)
        if inc.param is not None:
            cond.append(x.c.param == inc.param)
    if inc.reverse:
        sub = select(x.c.pid).where(*cond)
    else:
        t2 = resources.alias("t2")
        local = (select(t2.c.pid)
                 .select_from(x.join(t2, and_(t2.c.res_type == x.c.target_type,
                                              t2.c.res_id == x.c.target_id)))
                 .where(*cond))
        # Canonical references (e.g. QuestionnaireResponse.questionnaire) resolve through
        # the target's `url` parameter, looked up by (target type, "url", uri).
        canon_targets = _canonical_targets(inc)
        if canon_targets:
            u = idx_uri.alias("u")
            canonical = (select(u.c.pid)
                         .select_from(x.join(u, and_(u.c.res_type.in_(canon_targets),
                                                     u.c.param == "url",
                                                     u.c.uri == x.c.url)))
                         .where(*cond))
            sub = union_all(local, canonical)
        else:
            sub = local
    sel = select(t.c.pid, t.c.res_type, t.c.res_id, t.c.version, t.c.last_updated,
                 t.c.body).where(live, t.c.pid.in_(sub))
    return [_row(rec) for rec in conn.execute(sel.order_by(t.c.pid).limit(limit))]


def _canonical_targets(inc: Include) -> list[str]:
    """Target types an _include may reach through canonical (url) references."""
    if inc.source_type is None:
        return []
    params = reference_params(inc.source_type)
    chosen = [params[inc.param]] if inc.param in params else list(params.values())
    targets: set[str] = set()
    for p in chosen:
        if any(t in ("canonical", "uri") for b in p.branches for t in b.types):
            targets.update(p.targets)
    if inc.target_type is not None:
        targets &= {inc.target_type}
    return sorted(targets)


def find_ids(conn: Connection, res_type: str, params: str | list[tuple[str, str]], *,
             limit: int = 2, restrict: Restrict | None = None) -> list[str]:
    """Ids of the current `res_type` resources matching criteria such as `identifier=sys|1`.

    For conditional create/update/delete and conditional references: `limit` 2 is enough to
    tell none, one and several apart. Unknown parameters raise 400 (strict handling).
    """
    if isinstance(params, str):
        from urllib.parse import parse_qsl

        params = parse_qsl(params.lstrip("?"), keep_blank_values=True)
    parsed = parse_search(res_type, params, strict=True)
    if not parsed.filters:
        raise FhirError(400, "invalid", "Conditional criteria must contain a search filter")
    r = _MATCH_ROWS
    where = where_clause(conn, parsed, r, restrict)
    recs = conn.execute(select(r.c.res_id).where(where).order_by(r.c.pid).limit(limit)).all()
    return [rec.res_id for rec in recs]


def find_resources(conn: Connection, res_type: str, params: list[tuple[str, str]], *,
                   limit: int = 1000, restrict: Restrict | None = None,
                   empty_ok: bool = False) -> list[dict]:
    """Bodies of the current `res_type` resources matching `params` (oldest first, at most
    `limit`), in one statement, narrowed by `restrict` (the caller's access). With
    `empty_ok`, no parameters means every resource of the type."""
    parsed = parse_search(res_type, params, strict=True)
    if not parsed.filters and not empty_ok:
        raise FhirError(400, "invalid", "A search filter is required")
    r = _MATCH_ROWS
    where = and_(where_clause(conn, parsed, r, restrict), r.c.res_type == res_type)
    recs = conn.execute(select(r.c.body).where(where).order_by(r.c.pid).limit(limit)).all()
    return [orjson.loads(rec.body) for rec in recs]
