"""Outcome measures: the referral facts kept current on every write, `$referral-metrics`
(Parameters or CSV), the follow-up screening a referral schedules when care starts, and the
published Measures with `Measure/[id]/$evaluate-measure`.

After-write (same transaction as the write, so the facts never disagree with the data):
  Task         referral Task: its facts (times each status began, parties resolved to their
               organizations, service and category, the patient's equity codes, baseline and
               follow-up scores); first `in-progress`: the follow-up screening Tasks
  Patient      the patient's equity codes on each of their referrals
  Coverage     the coverage type on each referral of the beneficiary
  Observation  PHQ-9/GAD-7 totals: the score table, and the pairs of the patient's referrals
Reads are narrowed to what the caller may see, in SQL (`access.restriction`): the Tasks
counted, and the Observations and Coverages a figure comes from.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fhir_server.errors import FhirError
from fhir_server.features.common import party_organizations, read_ref
from fhir_server.interactions import access, crud
from fhir_server.interactions.caller_view import system_call
from fhir_server.interactions.context import Call, Services
from fhir_server.interactions.operations import Operation, OperationRegistry
from fhir_server.interactions.phases import WriteEvent
from fhir_server.interactions.results import Result
from fhir_server.storage import access_sql
from fhir_server.storage import outcomes_store as store
from fhir_server.storage.db import Connection, Database
from fhir_server.storage.repository import Repository, StoredResource
from fhir_server.workflow import equity, follow_up, measurement, measures, metrics
from fhir_server.workflow.canonical import CANONICAL_BASE
from fhir_server.workflow.referral_facts import TaskFacts, advance, from_history, instant_us
from fhir_server.workflow.task_rules import is_referral_task
from mappers.directory_model import SERVICE_CATEGORY_CS

OPERATION_BASE = f"{CANONICAL_BASE}/OperationDefinition"
_SCORE_CODES = tuple(f'"{loinc}"' for loinc, _name in measurement.INSTRUMENTS.values())


def install(services: Services, registry: OperationRegistry) -> None:
    """Register the write hook, the operations and the published Measures."""
    follow_up.check_weeks(services.settings.follow_up_screening_weeks)
    services.phases.add("after-write", "outcomes.referral-facts", _after_write, order=450,
                        types={"Task", "Patient", "Coverage", "Observation"})
    registry.register(Operation(
        name="referral-metrics", handler=_metrics, system=True,
        methods=frozenset({"GET", "POST"}), reads="query",
        definition=f"{OPERATION_BASE}/referral-metrics", raw_formats=frozenset({"text/csv"}),
        documentation="Referral outcome measures grouped by organization, service, priority, "
                      "period or equity dimension (Parameters or CSV)"))
    registry.register(Operation(
        name="evaluate-measure", handler=_evaluate_measure, types=frozenset({"Measure"}),
        instance_level=True, methods=frozenset({"GET"}),
        definition="http://hl7.org/fhir/OperationDefinition/Measure-evaluate-measure",
        documentation="A summary MeasureReport of one of our Measures for a period"))
    services.seed_providers.append(measures.measure_resources)


# -- the write path ------------------------------------------------------------------------
def _after_write(event: WriteEvent) -> None:
    """Keep the referral facts current with the version just stored."""
    conn, call, previous, new = event.conn, event.call, event.previous_stored, event.stored
    assert new is not None
    if new.res_type == "Task":
        _task_written(conn, call, new)
    elif new.res_type == "Patient" and new.body is not None:
        _patient_written(conn, new.res_id, new.resource())
    elif new.res_type == "Coverage":
        _coverage_written(conn, previous, new)
    elif new.res_type == "Observation":
        _observation_written(conn, previous, new)


def _task_written(conn: Connection, call: Call, new: StoredResource) -> None:
    if new.body is None:
        store.delete_facts(conn, new.pid)
        return
    task = new.resource()
    row = store.facts_row(conn, new.pid)
    if not is_referral_task(task):
        if row is not None:
            store.delete_facts(conn, new.pid)
        return
    before = _facts_of_row(row) if row is not None else None
    facts = advance(before, task, new.last_updated)
    values = _fact_values(new.res_id, facts)
    if row is None or any(row.get(k) != values.get(k) for k in _PARTY_COLUMNS):
        values.update(_parties(conn, facts))
    if row is None or row.get("patient_id") != facts.patient_id:
        values.update(_patient_values(conn, facts.patient_id, values["referred_day"]))
    elif row.get("referred_day") != values["referred_day"] and row.get("birth_day"):
        values["age_years"] = equity.age_on(row["birth_day"], values["referred_day"])
    store.save_facts(conn, new.pid, values)
    if row is None or (row.get("referred_at"), row.get("started_at"), row.get("patient_id")) \
            != (values["referred_at"], values["started_at"], values["patient_id"]):
        _choose_pairs(conn, pid=new.pid)
    if facts.status == "in-progress" and (before is None or before.started_at is None):
        _schedule_follow_up(conn, call, task, facts)


_PARTY_COLUMNS = ("requester_ref", "owner_ref", "focus")


def _facts_of_row(row: dict[str, Any]) -> TaskFacts:
    return TaskFacts(
        status=row["status"], redirected=bool(row["redirected"]), stalled=row["stalled"],
        status_reason=row["status_reason"], requester=row["requester_ref"],
        owner=row["owner_ref"], focus=row["focus"], patient_id=row["patient_id"],
        priority=row["priority"], replaces=None, first_at=row["first_at"],
        authored_at=None, requested_at=row["requested_at"], accepted_at=row["accepted_at"],
        started_at=row["started_at"], completed_at=row["completed_at"],
        ended_at=row["ended_at"], status_since=row["status_since"])


def _day(at_us: int) -> int:
    moment = datetime.fromtimestamp(at_us / 1_000_000, tz=UTC)
    return moment.year * 10000 + moment.month * 100 + moment.day


def _fact_values(task_id: str, facts: TaskFacts) -> dict[str, Any]:
    return {
        "task_id": task_id, "status": facts.status, "redirected": facts.redirected,
        "stalled": facts.stalled, "status_reason": facts.status_reason,
        "requester_ref": facts.requester, "owner_ref": facts.owner, "focus": facts.focus,
        "patient_id": facts.patient_id, "priority": facts.priority,
        "referred_at": facts.referred_at, "referred_day": _day(facts.referred_at),
        "first_at": facts.first_at, "requested_at": facts.requested_at,
        "accepted_at": facts.accepted_at, "started_at": facts.started_at,
        "completed_at": facts.completed_at, "ended_at": facts.ended_at,
        "status_since": facts.status_since,
    }


def _parties(conn: Connection, facts: TaskFacts) -> dict[str, Any]:
    """The organizations behind the requester and owner, the service and its category."""
    repo = Repository(conn)
    focus = read_ref(repo, facts.focus)
    parties = {"requester": {"reference": facts.requester} if facts.requester else None,
               "owner": {"reference": facts.owner} if facts.owner else None}
    orgs = party_organizations(repo, parties)
    owner = orgs.get(facts.owner or "", facts.owner)
    service_ref, service = _service(repo, facts.owner, owner, focus)
    category, category_name = _category(service, focus)
    return {"requester": orgs.get(facts.requester or "", facts.requester), "owner": owner,
            "service": service_ref, "category": category, "category_name": category_name}


def _service(repo: Repository, owner_ref: str | None, owner: str | None,
             focus: dict | None) -> tuple[str | None, dict | None]:
    """The HealthcareService the referral is for: the owner when it is one, else the
    ServiceRequest's performer service when the owner organization provides it (a referral
    redirected to another organization is not for the first one's service)."""
    if (owner_ref or "").startswith("HealthcareService/"):
        service = read_ref(repo, owner_ref)
        return (owner_ref, service) if service else (None, None)
    for performer in (focus or {}).get("performer") or []:
        ref = performer.get("reference") if isinstance(performer, dict) else None
        if not str(ref or "").startswith("HealthcareService/"):
            continue
        service = read_ref(repo, ref)
        provider = ((service or {}).get("providedBy") or {}).get("reference")
        if service is not None and (owner is None or provider == owner):
            return ref, service
    return None, None


def _category(service: dict | None, focus: dict | None) -> tuple[str | None, str | None]:
    """The service category: the HealthcareService's mental-health category, else the
    ServiceRequest's first category coding."""
    for concept in (service or {}).get("category") or []:
        for coding in concept.get("coding") or []:
            if coding.get("system") == SERVICE_CATEGORY_CS and coding.get("code"):
                return str(coding["code"]), coding.get("display") or concept.get("text")
    for concept in (focus or {}).get("category") or []:
        for coding in concept.get("coding") or []:
            if coding.get("code"):
                return str(coding["code"]), coding.get("display") or concept.get("text")
    return None, None


def _patient_values(conn: Connection, patient_id: str | None, referred_day: int
                    ) -> dict[str, Any]:
    if not patient_id:
        return {"birth_day": None, "age_years": None, "sex": None, "race": None,
                "ethnicity": None, "language": None, "coverage": None, "coverage_pid": None}
    patient = read_ref(Repository(conn), f"Patient/{patient_id}")
    demo = equity.demographics(patient)
    coverage_pid, coverage = equity.choose_coverage(store.coverages_of(conn, patient_id))
    return {"birth_day": demo.birth_date, "sex": demo.sex, "race": demo.race,
            "ethnicity": demo.ethnicity, "language": demo.language, "coverage": coverage,
            "coverage_pid": coverage_pid,
            "age_years": equity.age_on(demo.birth_date, referred_day)}


def _patient_written(conn: Connection, patient_id: str, patient: dict) -> None:
    demo = equity.demographics(patient)
    store.set_demographics(conn, patient_id, {
        "birth_day": demo.birth_date, "sex": demo.sex, "race": demo.race,
        "ethnicity": demo.ethnicity, "language": demo.language})


def _beneficiary(stored: StoredResource | None) -> str | None:
    if stored is None or stored.body is None:
        return None
    ref = (stored.resource().get("beneficiary") or {}).get("reference") or ""
    return ref.split("/", 1)[1] if ref.startswith("Patient/") else None


def _coverage_written(conn: Connection, previous: StoredResource | None,
                      new: StoredResource) -> None:
    for patient_id in {_beneficiary(previous), _beneficiary(new)} - {None}:
        assert patient_id is not None
        pid, code = equity.choose_coverage(store.coverages_of(conn, patient_id))
        store.set_coverage(conn, patient_id, code, pid)


def _score(stored: StoredResource | None) -> tuple[str, measurement.Score] | None:
    """(patient id, score) of a stored Observation that is a counted PHQ-9/GAD-7 total."""
    if stored is None or stored.body is None or not any(c in stored.body
                                                        for c in _SCORE_CODES):
        return None
    obs = stored.resource()
    ref = (obs.get("subject") or {}).get("reference") or ""
    if not ref.startswith("Patient/"):
        return None
    score = measurement.score_of(obs, instant_us(measurement.effective_time(obs)))
    return (ref.split("/", 1)[1], score) if score is not None else None


def _observation_written(conn: Connection, previous: StoredResource | None,
                         new: StoredResource) -> None:
    now = _score(new)
    if now is None and (previous is None or not any(c in (previous.body or "")
                                                    for c in _SCORE_CODES)):
        return
    touched: set[str] = set()
    if now is None:
        before = store.delete_score(conn, new.pid)
    else:
        patient_id, score = now
        before = store.save_score(conn, new.pid, patient_id, score.instrument, score.value,
                                  score.effective)
        touched.add(patient_id)
    if before:
        touched.add(before)
    for patient_id in sorted(touched):
        _choose_pairs(conn, patient_id=patient_id)


def _choose_pairs(conn: Connection, *, pid: int | None = None,
                  patient_id: str | None = None) -> None:
    store.choose_pairs(conn, pid=pid, patient_id=patient_id,
                       lookback=measurement.BASELINE_LOOKBACK_US,
                       follow_from=measurement.FOLLOW_UP_FROM_US,
                       follow_to=measurement.FOLLOW_UP_TO_US)


def _schedule_follow_up(conn: Connection, call: Call, task: dict, facts: TaskFacts) -> None:
    """Ask the patient to answer the PHQ-9/GAD-7 again (see workflow/follow_up.py)."""
    weeks = call.services.settings.follow_up_screening_weeks
    if not weeks or not facts.patient_id or not isinstance(task.get("requester"), dict) \
            or facts.started_at is None:
        return
    with_baseline = store.instruments_before(conn, facts.patient_id, facts.referred_at,
                                             measurement.BASELINE_LOOKBACK_US)
    instruments = [i for i in measurement.INSTRUMENTS if i in with_baseline] \
        or list(measurement.INSTRUMENTS)
    started = datetime.fromtimestamp(facts.started_at / 1_000_000, tz=UTC)
    system = system_call(call)
    for instrument in instruments:
        ident = follow_up.identifier(str(task["id"]), instrument)
        body = follow_up.follow_up_task(task, instrument, started, weeks, now=started)
        crud.create_in(conn, system, "Task", body,
                       if_none_exist=f"identifier={ident['system']}|{ident['value']}")


# -- rebuild -------------------------------------------------------------------------------
def rebuild(conn: Connection, batch: int = 500) -> int:
    """Recompute every fact and score from the stored resources and the Task history (after
    an upgrade, or to repair); returns the number of referral Tasks. No follow-up Task is
    created."""
    store.clear(conn)
    obs_pids = store.live_pids(conn, "Observation")
    for start in range(0, len(obs_pids), batch):
        for pid, _res_id, body in store.current_bodies(conn, obs_pids[start:start + batch]):
            stored = StoredResource(pid, "Observation", _res_id, 0, 0, False,
                                    _dumps(body))
            found = _score(stored)
            if found is not None:
                patient_id, score = found
                store.save_score(conn, pid, patient_id, score.instrument, score.value,
                                 score.effective)
    count = 0
    task_pids = store.live_pids(conn, "Task")
    for start in range(0, len(task_pids), batch):
        for pid, res_id, versions in store.histories(conn, task_pids[start:start + batch]):
            facts = from_history(versions)
            current = versions[-1][1] if versions else None
            if facts is None or not is_referral_task(current):
                continue
            values = _fact_values(res_id, facts)
            values.update(_parties(conn, facts))
            values.update(_patient_values(conn, facts.patient_id, values["referred_day"]))
            store.save_facts(conn, pid, values)
            _choose_pairs(conn, pid=pid)
            count += 1
    return count


def _dumps(body: dict) -> str:
    import orjson

    return orjson.dumps(body).decode()


def rebuild_database(db: Database) -> int:
    """`rebuild` in one write transaction."""
    with db.write() as conn:
        return rebuild(conn)


# -- operations ----------------------------------------------------------------------------
def _threshold(call: Call) -> int:
    return max(int(call.services.settings.small_cell_threshold), 0)


def select(call: Call, conn: Connection, query: metrics.MetricsQuery) -> list[tuple]:
    """The referral rows the caller may count for `query` (narrowed in SQL)."""
    access.check_type(call, "search-type", "Task")
    if any(d in equity.DIMENSIONS for d in query.dimensions):
        access.check_type(call, "search-type", "Patient")
    restrict = access.restriction(conn, call)
    narrowing = None if restrict is None else {
        res_type: (lambda r, t=res_type: restrict(r, (t,)))
        for res_type in ("Task", "Observation", "Coverage")}
    return store.select_referrals(
        conn, metrics.COLUMNS, start=query.start, end=query.end, filters=dict(query.filters),
        narrowing=narrowing)


def names_for(conn: Connection, call: Call, rows: list[tuple], query: metrics.MetricsQuery
              ) -> dict[str, str]:
    """Words for the organization, service and category keys of the groups (the names of
    the resources the caller may read; the others stay references)."""
    refs = metrics.reference_keys(rows, query.dimensions)
    keys = [(ref.split("/", 1)[0], ref.split("/", 1)[1]) for ref in refs if ref.count("/") == 1]
    restrict = access.restriction(conn, call)
    if restrict is not None:
        keys = sorted(access_sql.visible_keys(
            conn, keys, lambda r, res_type: restrict(r, (res_type,))))
    found = Repository(conn).read_many(keys)
    names: dict[str, str] = {}
    for (res_type, res_id), stored in found.items():
        if stored.deleted or stored.body is None:
            continue
        name = stored.resource().get("name")
        if isinstance(name, str) and name.strip():
            names[f"{res_type}/{res_id}"] = name.strip()
    if "category" in query.dimensions:
        names.update(store.category_names(conn))
    return names


def _period(query: metrics.MetricsQuery) -> dict[str, str]:
    out = {}
    for name, value in (("start", query.start), ("end", query.end)):
        if value is not None:
            out[name] = datetime.fromtimestamp(value / 1_000_000, tz=UTC) \
                .isoformat().replace("+00:00", "Z")
    return out


def referral_metrics(call: Call, params: list[tuple[str, str]]) -> metrics.Answer:
    """The computed answer of `$referral-metrics` for these parameters, as the caller."""
    query = metrics.parse_query(params)
    with call.db.read() as conn:
        rows = select(call, conn, query)
        names = names_for(conn, call, rows, query)
    return metrics.answer(rows, query, names, _threshold(call))


def _metrics(call: Call, res_type: str | None, res_id: str | None,
             params: list[tuple[str, str]], body: Any) -> Result:
    result = referral_metrics(call, params)
    if call.requested_raw_format == "text/csv":
        return Result(200, raw=(metrics.metrics_csv(result).encode(),
                                "text/csv; charset=utf-8"))
    return Result(200, resource=metrics.parameters(result, _period(result.query)))


def _evaluate_measure(call: Call, res_type: str | None, res_id: str | None,
                      params: list[tuple[str, str]], body: Any) -> Result:
    definition = measures.definition(res_id or "")
    if definition is None:
        raise FhirError(422, "not-supported", f"Measure/{res_id} is not one this server "
                        "evaluates (it evaluates its own published Measures)", "Measure")
    start, end = measures.parse_period(params)
    query = metrics.MetricsQuery(("all", "owner"), start, end)
    with call.db.read() as conn:
        rows = select(call, conn, query)
        names = names_for(conn, call, rows, query)
    result = metrics.answer(rows, query, names, _threshold(call))
    return Result(200, resource=measures.measure_report(definition, result, params))


# -- the command ---------------------------------------------------------------------------
def register_cli(sub) -> None:  # type: ignore[no-untyped-def]
    """`python -m fhir_server rebuild-outcomes`."""
    rebuild = sub.add_parser("rebuild-outcomes", help="recompute the facts the outcome measures "
                                                      "count from the stored resources and the "
                                                      "Task history")
    rebuild.set_defaults(handler=_rebuild_outcomes)


def _rebuild_outcomes(settings, args) -> int:  # type: ignore[no-untyped-def]
    db = Database(settings.database_url)
    try:
        print(f"{rebuild_database(db)} referral Tasks measured again")
    finally:
        db.dispose()
    return 0
