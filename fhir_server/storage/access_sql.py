"""SQL building blocks for access narrowing (the policy lives in fhir_server/auth; the
composition in fhir_server/interactions/access.py). Each function returns a boolean clause
over a `resources` alias, evaluated inside the search's own query, before paging."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, exists, false, or_, select, true, tuple_

from fhir_server.storage.index_schema import idx_reference, idx_token
from fhir_server.storage.schema import resources

#: A boolean SQL clause (the type the access layer composes).
Clause = ColumnElement[bool]


def type_is(r: Any, res_type: str) -> ColumnElement[bool]:
    """Row `r` is of `res_type`."""
    return r.c.res_type == res_type


def id_is(r: Any, res_id: str) -> ColumnElement[bool]:
    """Row `r` has id `res_id`."""
    return r.c.res_id == res_id


def same_author(r: Any, other: Any) -> ColumnElement[bool]:
    """Rows `r` and `other` were written by the same organization (or both by the server)."""
    return r.c.author_org.is_not_distinct_from(other.c.author_org)


def references_any(r: Any, params: tuple[str, ...], targets: frozenset[tuple[str, str]]
                   ) -> ColumnElement[bool]:
    """Row `r` references one of `targets` ((type, id) pairs) through one of `params`."""
    if not targets or not params:
        return false()
    x = idx_reference.alias()
    return exists(select(1).select_from(x).where(
        x.c.pid == r.c.pid, x.c.param.in_(params),
        tuple_(x.c.target_type, x.c.target_id).in_(sorted(targets))))


def lacks_reference(r: Any, param: str) -> ColumnElement[bool]:
    """Row `r` references nothing through `param` (e.g. a Task without owner)."""
    x = idx_reference.alias()
    return ~exists(select(1).select_from(x).where(x.c.pid == r.c.pid, x.c.param == param))


def references_patient(r: Any, params: tuple[str, ...], patient_id: str) -> ColumnElement[bool]:
    """Row `r` is in the compartment of Patient/`patient_id` through one of `params`."""
    return references_any(r, params, frozenset({("Patient", patient_id)}))


def referenced_by(r: Any, target_type: str, source_type: str, params: tuple[str, ...],
                  source_visible: Any) -> ColumnElement[bool]:
    """Some `source_type` resource that satisfies `source_visible(source_alias)` references
    row `r` (of `target_type`) through one of `params`."""
    x = idx_reference.alias()
    s = resources.alias()
    return exists(select(1).select_from(x.join(s, s.c.pid == x.c.pid)).where(
        x.c.res_type == source_type, x.c.param.in_(params), x.c.target_type == target_type,
        x.c.target_id == r.c.res_id, s.c.deleted.is_(False), source_visible(s)))


def written_by(r: Any, organization: str) -> ColumnElement[bool]:
    """Row `r` was written (created) by `organization`."""
    return r.c.author_org == organization


def referenced_by_author(r: Any, target_type: str, organization: str) -> ColumnElement[bool]:
    """A live resource written by `organization` references row `r` (of `target_type`),
    through any reference parameter."""
    x = idx_reference.alias()
    s = resources.alias()
    return exists(select(1).select_from(x.join(s, s.c.pid == x.c.pid)).where(
        x.c.target_id == r.c.res_id, x.c.target_type == target_type,
        s.c.author_org == organization, s.c.deleted.is_(False)))


def has_token(r: Any, param: str, code: str, system: str | None = None) -> ColumnElement[bool]:
    """Row `r` has token `code` (optionally in `system`) for search parameter `param`."""
    z = idx_token.alias()
    cond = [z.c.pid == r.c.pid, z.c.param == param, z.c.code == code]
    if system is not None:
        cond.append(z.c.system == system)
    return exists(select(1).select_from(z).where(*cond))


def references_live(r: Any, param: str, target_type: str, target_visible: Any
                    ) -> ColumnElement[bool]:
    """Row `r` references, through `param`, a current `target_type` resource satisfying
    `target_visible(target_alias)`."""
    x = idx_reference.alias()
    t = resources.alias()
    return exists(select(1).select_from(x).join(
        t, and_(t.c.res_type == target_type, t.c.res_id == x.c.target_id)).where(
        x.c.pid == r.c.pid, x.c.param == param, x.c.target_type == target_type,
        t.c.deleted.is_(False), target_visible(t)))


def type_in(r: Any, types: frozenset[str]) -> ColumnElement[bool]:
    return r.c.res_type.in_(sorted(types)) if types else false()


def any_of(clauses: list[ColumnElement[bool]]) -> ColumnElement[bool]:
    return or_(*clauses) if clauses else false()


def all_of(clauses: list[ColumnElement[bool]]) -> ColumnElement[bool]:
    return and_(*clauses) if clauses else true()


def org_refs(conn: Any, organization: str) -> frozenset[tuple[str, str]]:
    """(type, id) of Organization/O and of every PractitionerRole and HealthcareService
    whose `organization` parameter (PractitionerRole.organization,
    HealthcareService.providedBy) references it."""
    org_type, _, org_id = organization.partition("/")
    x = idx_reference
    rows = conn.execute(
        select(resources.c.res_type, resources.c.res_id)
        .select_from(x.join(resources, resources.c.pid == x.c.pid))
        .where(x.c.param == "organization",
               x.c.res_type.in_(("PractitionerRole", "HealthcareService")),
               x.c.target_type == org_type, x.c.target_id == org_id,
               resources.c.deleted.is_(False))).all()
    return frozenset({(org_type, org_id), *((row.res_type, row.res_id) for row in rows)})


# Built once, with their column collections set up before any thread uses them: a write
# checks every reference it makes, and a fresh alias per check cost more than the query.
_KEYED = resources.alias("vk")
_KEYED_LIVE = (select(_KEYED.c.res_id)
               .where(_KEYED.c.res_type == bindparam("res_type"),
                      _KEYED.c.res_id.in_(bindparam("ids", expanding=True)),
                      _KEYED.c.deleted.is_(False)))
_ROW = resources.alias("vr")
_ROW.c.pid  # noqa: B018


def visible_keys(conn: Any, keys: list[tuple[str, str]], clause_for: Any
                 ) -> set[tuple[str, str]]:
    """Which of `keys` ((type, id) pairs) are live resources satisfying `clause_for(alias,
    type)` (None: no narrowing). One statement per type."""
    by_type: dict[str, list[str]] = {}
    for res_type, res_id in keys:
        by_type.setdefault(res_type, []).append(res_id)
    found: set[tuple[str, str]] = set()
    for res_type, ids in by_type.items():
        query = _KEYED_LIVE
        if clause_for is not None:
            query = query.where(clause_for(_KEYED, res_type))
        rows = conn.execute(query, {"res_type": res_type, "ids": sorted(set(ids))})
        found.update((res_type, row[0]) for row in rows)
    return found


def row_visible(conn: Any, pid: int, clause_for: Any) -> bool:
    """Does the stored row `pid` satisfy the narrowing `clause_for(alias)`?"""
    r = _ROW
    return conn.execute(select(r.c.pid).where(r.c.pid == pid, clause_for(r))).first() is not None
