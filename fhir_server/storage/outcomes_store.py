"""SQL for the outcome measures: keep the referral facts and screening scores current, pick
each referral's baseline and follow-up scores, and select the referrals a caller may count.

Every function runs on a Connection already inside a transaction. The values come from the
caller (`fhir_server/features/outcomes.py`), which derives them from resources with the
pure rules in `fhir_server/workflow/`; this module only stores and selects. Access
narrowing is the caller's `restrict(alias)` clause (interactions/access.py), applied here in
SQL to the Task rows and to the Observation and Coverage rows a figure depends on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Connection,
    Integer,
    and_,
    bindparam,
    case,
    delete,
    insert,
    literal,
    null,
    or_,
    select,
    union_all,
    update,
)

from fhir_server.storage import history_bodies
from fhir_server.storage.index_schema import idx_reference
from fhir_server.storage.outcomes_schema import referral_facts, screening_scores
from fhir_server.storage.schema import history, resources

Restrict = Callable[[Any], Any]
F = referral_facts
S = screening_scores

#: Columns a caller may not read without seeing the resources they come from: the column
#: -> (the type of those resources, the pid columns that must all be visible).
GATED: dict[str, tuple[str, tuple[str, ...]]] = {
    "coverage": ("Coverage", ("coverage_pid",)),
    "phq9_base": ("Observation", ("phq9_base_pid", "phq9_follow_pid")),
    "phq9_follow": ("Observation", ("phq9_base_pid", "phq9_follow_pid")),
    "gad7_base": ("Observation", ("gad7_base_pid", "gad7_follow_pid")),
    "gad7_follow": ("Observation", ("gad7_base_pid", "gad7_follow_pid")),
}
NOT_VISIBLE = "not-visible"


# -- referral facts ------------------------------------------------------------------------
def facts_row(conn: Connection, pid: int) -> dict[str, Any] | None:
    """The stored facts of the Task with this pid (None when there are none)."""
    row = conn.execute(select(F).where(F.c.pid == pid)).mappings().first()
    return dict(row) if row is not None else None


def save_facts(conn: Connection, pid: int, values: Mapping[str, Any]) -> None:
    """Insert or replace the facts of the Task with this pid."""
    changed = conn.execute(update(F).where(F.c.pid == pid).values(**values)).rowcount
    if not changed:
        conn.execute(insert(F).values(pid=pid, **values))


def delete_facts(conn: Connection, pid: int) -> None:
    conn.execute(delete(F).where(F.c.pid == pid))


_DEMOGRAPHICS = ("sex", "race", "ethnicity", "language")
_BIRTH = bindparam("b_birth_day", type_=Integer)
# Built once: a patient write runs it, and building the statement cost more than running it.
_SET_DEMOGRAPHICS = update(F).where(F.c.patient_id == bindparam("b_patient_id")).values(
    birth_day=_BIRTH,
    # NULL birth day: the comparison is NULL, so the age is NULL too
    age_years=case((F.c.referred_day >= _BIRTH, (F.c.referred_day - _BIRTH) // 10000),
                   else_=null()),
    **{name: bindparam(f"b_{name}") for name in _DEMOGRAPHICS})


def set_demographics(conn: Connection, patient_id: str, values: Mapping[str, Any]) -> None:
    """Store a patient's equity codes on every referral of theirs (age per referral)."""
    conn.execute(_SET_DEMOGRAPHICS, {
        "b_patient_id": patient_id, "b_birth_day": values.get("birth_day"),
        **{f"b_{name}": values.get(name) for name in _DEMOGRAPHICS}})


def set_coverage(conn: Connection, patient_id: str, coverage: str,
                 coverage_pid: int | None) -> None:
    conn.execute(update(F).where(F.c.patient_id == patient_id).values(
        coverage=coverage, coverage_pid=coverage_pid))


def coverages_of(conn: Connection, patient_id: str) -> list[tuple[int, dict]]:
    """(pid, body) of the live Coverages whose beneficiary is the patient."""
    r, x = resources, idx_reference
    rows = conn.execute(select(r.c.pid, r.c.body).select_from(x.join(r, r.c.pid == x.c.pid))
                        .where(x.c.res_type == "Coverage", x.c.param == "beneficiary",
                               x.c.target_type == "Patient", x.c.target_id == patient_id,
                               r.c.deleted.is_(False))).all()
    return [(pid, orjson.loads(body)) for pid, body in {row.pid: row.body for row in rows
                                                        }.items() if body]


# -- screening scores ----------------------------------------------------------------------
def save_score(conn: Connection, pid: int, patient_id: str, instrument: str, score: int,
               effective: int) -> str | None:
    """Insert or replace a score; returns the patient it belonged to before, if another."""
    before = conn.execute(select(S.c.patient_id).where(S.c.pid == pid)).scalar()
    values = {"patient_id": patient_id, "instrument": instrument, "score": score,
              "effective": effective}
    if before is None:
        conn.execute(insert(S).values(pid=pid, **values))
        return None
    conn.execute(update(S).where(S.c.pid == pid).values(**values))
    return before if before != patient_id else None


def delete_score(conn: Connection, pid: int) -> str | None:
    """Forget a score; returns the patient it belonged to (None when there was none)."""
    before = conn.execute(select(S.c.patient_id).where(S.c.pid == pid)).scalar()
    if before is not None:
        conn.execute(delete(S).where(S.c.pid == pid))
    return before


def instruments_before(conn: Connection, patient_id: str, at: int, lookback: int) -> set[str]:
    """The instruments the patient has a score of in [at - lookback, at]."""
    return set(conn.execute(select(S.c.instrument).where(
        S.c.patient_id == patient_id, S.c.effective >= at - lookback, S.c.effective <= at)
        .distinct()).scalars())


def _latest(instrument: str, low: Any, high: Any, column: Any) -> Any:
    """The `column` (score or pid) of the patient's latest `instrument` score with
    low <= effective <= high, as a correlated sub-query on the facts row."""
    return (select(column).where(S.c.patient_id == F.c.patient_id,
                                 S.c.instrument == instrument,
                                 S.c.effective >= low, S.c.effective <= high)
            .order_by(S.c.effective.desc(), S.c.pid.desc()).limit(1).scalar_subquery())


def _pairs_statement(by_pid: bool) -> Any:
    """The update that picks every instrument's baseline and follow-up, for one referral
    (`by_pid`) or for a patient's referrals; the windows are parameters (`lookback`,
    `follow_from`, `follow_to`), so it is built once: a score or referral write runs it."""
    lookback, follow_from, follow_to = (bindparam(name, type_=BigInteger) for name in
                                        ("lookback", "follow_from", "follow_to"))
    values: dict[str, Any] = {}
    for instrument, prefix in (("phq-9", "phq9"), ("gad-7", "gad7")):
        base_low, base_high = F.c.referred_at - lookback, F.c.referred_at
        follow_low, follow_high = F.c.started_at + follow_from, F.c.started_at + follow_to
        for suffix, column in (("", S.c.score), ("_pid", S.c.pid)):
            values[f"{prefix}_base{suffix}"] = _latest(instrument, base_low, base_high, column)
            values[f"{prefix}_follow{suffix}"] = case(
                (F.c.started_at.is_(None), null()),
                else_=_latest(instrument, follow_low, follow_high, column))
    where = (F.c.pid == bindparam("target_pid") if by_pid
             else F.c.patient_id == bindparam("target_patient"))
    return update(F).where(where).values(**values)


_PAIRS_BY_PID = _pairs_statement(by_pid=True)
_PAIRS_BY_PATIENT = _pairs_statement(by_pid=False)


def choose_pairs(conn: Connection, *, patient_id: str | None = None, pid: int | None = None,
                 lookback: int, follow_from: int, follow_to: int) -> None:
    """Pick the baseline (latest in [referred - lookback, referred]) and the follow-up (latest
    in [started + follow_from, started + follow_to]) of each instrument for the referrals
    of a patient, or for one referral."""
    windows = {"lookback": lookback, "follow_from": follow_from, "follow_to": follow_to}
    if pid is not None:
        conn.execute(_PAIRS_BY_PID, {"target_pid": pid, **windows})
    else:
        conn.execute(_PAIRS_BY_PATIENT, {"target_patient": patient_id, **windows})


# -- selection -----------------------------------------------------------------------------
def _where(stmt: Any, start: int | None, end: int | None,
           filters: Mapping[str, Sequence[str]]) -> Any:
    if start is not None:
        stmt = stmt.where(F.c.referred_at >= start)
    if end is not None:
        stmt = stmt.where(F.c.referred_at < end)
    for name, values in filters.items():
        if not values:
            continue
        if name in ("requester", "owner"):
            stmt = stmt.where(or_(F.c[name].in_(values), F.c[f"{name}_ref"].in_(values)))
        else:
            stmt = stmt.where(F.c[name].in_(values))
    return stmt


def _visible_pids(res_type: str, pid_columns: Sequence[str], restrict: Restrict,
                  start: int | None, end: int | None,
                  filters: Mapping[str, Sequence[str]]) -> Any:
    """The pids, among those the selected referrals name in `pid_columns`, of the
    `res_type` resources the caller may see (a CTE: its narrowing is planned once)."""
    named = union_all(*[_where(select(F.c[c].label("pid")).where(F.c[c].is_not(None)),
                               start, end, filters) for c in pid_columns]).subquery()
    o = resources.alias()
    return (select(o.c.pid).where(o.c.pid.in_(select(named.c.pid)), restrict(o))
            .cte(f"visible_{res_type.lower()}"))


def select_referrals(conn: Connection, columns: Sequence[str], *, start: int | None,
                     end: int | None, filters: Mapping[str, Sequence[str]],
                     narrowing: Mapping[str, Restrict] | None) -> list[tuple]:
    """The referrals made in [start, end) that match every filter and that the caller may
    see, as tuples of `columns`. `narrowing`: the caller's access narrowing over a
    `resources` alias for "Task", "Observation" and "Coverage" (None: the caller sees
    everything); a figure that comes from an Observation or Coverage the caller may not
    see is left out (coverage shows as `not-visible`). A filter on requester or owner
    matches the organization or the reference as written; the others match their column."""
    if narrowing is None:
        return [tuple(row) for row in conn.execute(
            _where(select(*[F.c[c] for c in columns]), start, end, filters))]
    visible = {res_type: _visible_pids(res_type, sorted({p for t, pids in GATED.values()
                                                         if t == res_type for p in pids}),
                                       narrowing[res_type], start, end, filters)
               for res_type in {t for t, _pids in GATED.values()}}
    cols = []
    for name in columns:
        if name not in GATED:
            cols.append(F.c[name])
            continue
        res_type, pid_columns = GATED[name]
        seen = and_(*[or_(F.c[p].is_(None), F.c[p].in_(select(visible[res_type].c.pid)))
                      for p in pid_columns])
        hidden = literal(NOT_VISIBLE) if name == "coverage" else null()
        cols.append(case((seen, F.c[name]), else_=hidden).label(name))
    r = resources.alias()
    stmt = select(*cols).select_from(F.join(r, r.c.pid == F.c.pid)).where(narrowing["Task"](r))
    return [tuple(row) for row in conn.execute(_where(stmt, start, end, filters))]


def category_names(conn: Connection) -> dict[str, str]:
    """The stored name of each service category code."""
    rows = conn.execute(select(F.c.category, F.c.category_name)
                        .where(F.c.category.is_not(None), F.c.category_name.is_not(None))
                        .distinct()).all()
    return {code: name for code, name in rows}


def owner_acceptance(conn: Connection) -> list[tuple]:
    """(owner reference, status, redirected, referred_at, accepted_at) of every referral that
    has an owner (provider history for ranking)."""
    return [tuple(row) for row in conn.execute(
        select(F.c.owner_ref, F.c.status, F.c.redirected, F.c.referred_at, F.c.accepted_at)
        .where(F.c.owner_ref.is_not(None)))]


# -- rebuild -------------------------------------------------------------------------------
def clear(conn: Connection) -> None:
    """Forget every fact and score (before a rebuild)."""
    conn.execute(delete(F))
    conn.execute(delete(S))


def live_pids(conn: Connection, res_type: str) -> list[int]:
    """The pids of every live resource of a type."""
    return list(conn.execute(select(resources.c.pid).where(
        resources.c.res_type == res_type, resources.c.deleted.is_(False))
        .order_by(resources.c.pid)).scalars())


def histories(conn: Connection, pids: Sequence[int]) -> Iterator[tuple[int, str, list]]:
    """(pid, id, [(lastUpdated, body or None), ...] oldest first) for each pid given."""
    rows = conn.execute(select(history.c.pid, history.c.res_id, history.c.last_updated,
                               history.c.deleted, history.c.zbody,
                               history_bodies.CURRENT.c.body)
                        .select_from(history_bodies.VERSIONS)
                        .where(history.c.pid.in_(list(pids)))
                        .order_by(history.c.pid, history.c.version))
    current: tuple[int, str, list] | None = None
    for pid, res_id, updated, deleted, zbody, current_body in rows:
        if current is None or current[0] != pid:
            if current is not None:
                yield current
            current = (pid, res_id, [])
        body = history_bodies.body(deleted, zbody, current_body)
        current[2].append((updated, orjson.loads(body) if body else None))
    if current is not None:
        yield current


def current_bodies(conn: Connection, pids: Sequence[int]) -> Iterator[tuple[int, str, dict]]:
    """(pid, id, body) of live resources."""
    rows = conn.execute(select(resources.c.pid, resources.c.res_id, resources.c.body)
                        .where(resources.c.pid.in_(list(pids)), resources.c.deleted.is_(False)))
    for pid, res_id, body in rows:
        if body:
            yield pid, res_id, orjson.loads(body)
