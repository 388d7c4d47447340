"""A synthetic referral network, the same for the same seed: clinics refer patients to three
mental-health providers; each referral goes its own way (accepted and completed, declined,
redirected, cancelled, failed, still waiting, in care) with baseline and follow-up PHQ-9 and
GAD-7 screenings, so the outcomes dashboard and `$referral-metrics` have something to show.

Everything is written through the server's own write path (validation, workflow rules,
screening, follow-up requests, the stalled sweep), each event at the time it happened
(`replay_clock`), so the Task history holds the times each status began. Nothing is sent
over the network; the target is the configured database (`DATABASE_URL`, as for
`python -m fhir_server load`).

    .venv/bin/python examples/synthetic_population.py [--seed 17] [--referrals 60]
                                                      [--start 2026-06-01]

`build(seed, referrals, start)` returns the plan (`Population`) without writing anything:
the tests compute the expected measures from it by hand and compare them with the API.
"""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root is importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SDOHCC = "http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition"
SNOMED = "http://snomed.info/sct"
NPI = "http://hl7.org/fhir/sid/us-npi"
MRN = "http://synthetic.example.org/mrn"
US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition"
OMB = "urn:oid:2.16.840.1.113883.6.238"
NULL_FLAVOR = "http://terminology.hl7.org/CodeSystem/v3-NullFlavor"
PAYER_TYPE = "http://mh-referral.example.org/fhir/CodeSystem/payer-type"
SERVICE_CATEGORY = "http://mh-referral.example.org/fhir/CodeSystem/mh-service-category"
QUESTIONNAIRES = "http://mh-referral.example.org/fhir/Questionnaire"

CLINICS = (("syn-clinic-riverside", "Riverside Family Health Center"),
           ("syn-clinic-harbor", "Harbor Community Clinic"))
PROVIDERS = (("syn-lakeside", "Lakeside Behavioral Health", "therapy",
              "Therapy / counseling", "Lakeside outpatient therapy"),
             ("syn-northside", "Northside Psychiatry", "psychiatry", "Psychiatry",
              "Northside medication management"),
             ("syn-bridges", "Bridges Peer Support", "peer-support", "Peer support",
              "Bridges peer support groups"))
RACES = (("white", "2106-3", "White", 40), ("black", "2054-5", "Black or African American", 25),
         ("asian", "2028-9", "Asian", 12), ("multiple", None, None, 6),
         ("declined", None, None, 8), ("unknown", None, None, 9))
ETHNICITIES = (("hispanic", "2135-2", "Hispanic or Latino", 30),
               ("not-hispanic", "2186-5", "Not Hispanic or Latino", 60),
               ("unknown", None, None, 10))
LANGUAGES = (("en", 68), ("es", 26), ("vi", 6))
SEXES = (("female", 55), ("male", 40), ("other", 5))
COVERAGES = (("medicaid", 45), ("private", 30), ("medicare", 10), ("none", 15))
PRIORITIES = (("routine", 70), ("urgent", 25), ("asap", 5))
#: outcome class -> weight; "redirected" goes on to a second provider
PATHS = (("completed", 30), ("in-care", 14), ("accepted", 8), ("waiting", 10),
         ("rejected", 10), ("redirected", 10), ("cancelled", 10), ("failed", 8))
REJECT_REASONS = ("No capacity this month", "Outside our service area")
CANCEL_REASONS = ("Patient moved away", "Patient declined the service")
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


@dataclass
class Score:
    instrument: str  # phq-9 | gad-7
    value: int
    at: datetime


@dataclass
class Step:
    status: str
    at: datetime
    reason: str | None = None


@dataclass
class Referral:
    """One referral as planned (the Task the clinic sends, and what happens to it)."""

    index: int
    task_id: str
    patient: int
    clinic: int
    provider: int
    priority: str
    referred: datetime
    steps: list[Step]  # after `requested`
    outcome: str  # the outcome class of this Task
    successor: Referral | None = None  # the Task a redirect hands the referral to
    redirected_at: datetime | None = None


@dataclass
class Patient:
    index: int
    patient_id: str
    sex: str
    birth: date
    race: str
    ethnicity: str
    language: str
    coverage: str
    scores: list[Score] = field(default_factory=list)


@dataclass
class Population:
    seed: int
    start: datetime
    end: datetime  # the stalled sweep runs at this time
    patients: list[Patient]
    referrals: list[Referral]  # the Tasks the clinics sent (successors hang off them)

    def tasks(self) -> list[Referral]:
        """Every referral Task, successors of redirects included."""
        out = []
        for referral in self.referrals:
            out.append(referral)
            if referral.successor is not None:
                out.append(referral.successor)
        return out


def _pick(rng: random.Random, weighted: tuple) -> tuple:
    return rng.choices(weighted, weights=[w[-1] for w in weighted])[0]


def _business(at: datetime) -> datetime:
    """The same moment, moved to the next weekday at 9:00 when it falls on a weekend."""
    while at.weekday() >= 5:
        at = datetime.combine(at.date() + DAY, time(9), tzinfo=UTC)
    return at


def _path(rng: random.Random, outcome: str, referred: datetime) -> list[Step]:
    accepted = referred + HOUR * rng.choice((1, 3, 6, 20, 30, 50, 70, 100, 160))
    started = accepted + DAY * rng.randint(2, 13)
    if outcome == "waiting":
        return []
    if outcome == "rejected":
        return [Step("rejected", accepted, rng.choice(REJECT_REASONS))]
    steps = [Step("accepted", accepted)]
    if outcome == "accepted":
        return steps
    if outcome == "cancelled":
        return steps + [Step("cancelled", accepted + DAY * 3, rng.choice(CANCEL_REASONS))]
    steps.append(Step("in-progress", started))
    if outcome == "failed":
        return steps + [Step("failed", started + DAY * 10, "Patient did not attend")]
    if outcome == "completed":
        steps.append(Step("completed", started + DAY * rng.randint(30, 70)))
    return steps


def build(seed: int = 17, referrals: int = 60, start: date = date(2026, 6, 1)) -> Population:
    """The plan of the population for `seed` (nothing is written)."""
    rng = random.Random(seed)
    begin = datetime.combine(start, time(9), tzinfo=UTC)
    patients, planned = [], []
    for n in range(referrals):
        birth = date(rng.randint(1944, 2010), rng.randint(1, 12), rng.randint(1, 28))
        patient = Patient(n, f"syn-{seed}-p{n:03d}", _pick(rng, SEXES)[0], birth,
                          _pick(rng, RACES)[0], _pick(rng, ETHNICITIES)[0],
                          _pick(rng, LANGUAGES)[0], _pick(rng, COVERAGES)[0])
        referred = _business(begin + timedelta(hours=rng.randint(0, 8 * 7 * 24 - 1)))
        baseline_at = referred - DAY * rng.randint(1, 20)
        patient.scores.append(Score("phq-9", rng.randint(6, 24), baseline_at))
        if rng.random() < 0.6:
            patient.scores.append(Score("gad-7", rng.randint(5, 21), baseline_at))
        outcome = _pick(rng, PATHS)[0]
        provider = rng.randrange(len(PROVIDERS))
        referral = Referral(n, f"syn-{seed}-t{n:03d}", n, rng.randrange(len(CLINICS)),
                            provider, _pick(rng, PRIORITIES)[0], referred,
                            _path(rng, "rejected" if outcome == "redirected" else outcome,
                                  referred), outcome)
        if outcome == "redirected":
            referral.outcome = "redirected"
            referral.redirected_at = referral.steps[0].at
            referral.steps = []
            follow = _pick(rng, (("completed", 5), ("in-care", 3), ("waiting", 2)))[0]
            moved = referral.redirected_at
            referral.successor = Referral(
                n, "", n, referral.clinic, (provider + 1) % len(PROVIDERS), referral.priority,
                moved, _path(rng, follow, moved), follow)
        for task in (referral, referral.successor):
            if task is None:
                continue
            started = next((s.at for s in task.steps if s.status == "in-progress"), None)
            if started is None:
                continue
            roll = rng.random()
            for score in [s for s in patient.scores if s.at <= referred]:
                if roll < 0.75:  # inside the 4 to 12 weeks after care started
                    at = started + DAY * rng.randint(29, 83)
                elif roll < 0.85:  # too late to count
                    at = started + DAY * rng.randint(90, 110)
                else:
                    continue
                change = rng.choice((0.2, 0.3, 0.45, 0.5, 0.6, 0.8, 1.0, 1.1))
                top = 24 if score.instrument == "phq-9" else 21  # PHQ-9 item 9 stays 0
                patient.scores.append(Score(score.instrument,
                                            min(round(score.value * change), top), at))
        patients.append(patient)
        planned.append(referral)
    last = max(r.referred for r in planned)
    return Population(seed, begin, last + DAY * 20, patients, planned)


# -- writing it ------------------------------------------------------------------------------
def _resources_of(population: Population) -> list[tuple[datetime, str, object]]:
    """Every write as (time, kind, details), in the order they happened."""
    events: list[tuple[datetime, str, object]] = []
    for patient in population.patients:
        first = min(s.at for s in patient.scores)
        events.append((first - DAY, "patient", patient))
        for score in patient.scores:
            events.append((score.at, "score", (patient, score)))
    for referral in population.referrals:
        events.append((referral.referred, "referral", referral))
        for step in referral.steps:
            events.append((step.at, "step", (referral, step)))
        if referral.successor is not None:
            events.append((referral.redirected_at, "redirect", referral))
            for step in referral.successor.steps:
                events.append((step.at, "step", (referral.successor, step)))
    events.append((population.end, "sweep", None))
    order = {"patient": 0, "score": 1, "referral": 2, "redirect": 3, "step": 4, "sweep": 5}
    return sorted(events, key=lambda e: (e[0], order[e[1]]))


def _ext(url: str, parts: list[dict]) -> dict:
    return {"url": url, "extension": parts}


def _omb(table: tuple, code: str, url: str) -> dict | None:
    row = next(r for r in table if r[0] == code)
    if code == "unknown":
        return None
    if code == "declined":
        return _ext(url, [{"url": "ombCategory", "valueCoding": {
            "system": NULL_FLAVOR, "code": "ASKU", "display": "Asked but no answer"}},
            {"url": "text", "valueString": "Declined to answer"}])
    if code == "multiple":
        return _ext(url, [{"url": "ombCategory", "valueCoding": {
            "system": OMB, "code": "2106-3", "display": "White"}},
            {"url": "ombCategory", "valueCoding": {
                "system": OMB, "code": "2054-5", "display": "Black or African American"}},
            {"url": "text", "valueString": "Mixed"}])
    return _ext(url, [{"url": "ombCategory", "valueCoding": {
        "system": OMB, "code": row[1], "display": row[2]}}, {"url": "text", "valueString": row[2]}])


def patient_resource(p: Patient, seed: int) -> dict:
    rng = random.Random(f"{seed}-{p.index}")  # names only: the plan's draws stay the same
    given = rng.choice(("Alex", "Sam", "Jordan", "Maria", "Linh", "Ana", "Chris", "Dana"))
    family = rng.choice(("Rivera", "Nguyen", "Smith", "Okafor", "Garcia", "Brown", "Tran"))
    patient: dict = {
        "resourceType": "Patient", "id": p.patient_id, "active": True,
        "identifier": [{"type": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
            "system": MRN, "value": p.patient_id}],
        "name": [{"given": [given], "family": family}], "gender": p.sex,
        "birthDate": p.birth.isoformat(),
        "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47",
                                                     "code": p.language}]},
                           "preferred": True}],
    }
    extensions = [e for e in (_omb(RACES, p.race, f"{US_CORE}/us-core-race"),
                              _omb(ETHNICITIES, p.ethnicity, f"{US_CORE}/us-core-ethnicity"))
                  if e]
    if extensions:
        patient["extension"] = extensions
    return patient


def coverage_resource(p: Patient) -> dict | None:
    if p.coverage == "none":
        return None
    return {"resourceType": "Coverage", "id": f"{p.patient_id}-coverage", "status": "active",
            "type": {"coding": [{"system": PAYER_TYPE, "code": p.coverage}]},
            "beneficiary": {"reference": f"Patient/{p.patient_id}"},
            "payor": [{"display": {"medicaid": "State Medicaid", "medicare": "Medicare",
                                   "private": "Acme Health Plan"}[p.coverage]}]}


def questionnaire_response(patient_id: str, score: Score, author: str) -> dict:
    """A completed response whose answers add up to `score.value` (item 9 always 0)."""
    from profiles.questionnaires import get_questionnaire

    questionnaire = get_questionnaire(f"{QUESTIONNAIRES}/{score.instrument}|1.0.0")
    items = [i for i in questionnaire["item"] if i.get("required")]
    left, answers = score.value, []
    for n, item in enumerate(items):
        last_phq9_item = score.instrument == "phq-9" and n == len(items) - 1
        value = 0 if last_phq9_item else min(3, left)
        left -= value
        answers.append({"linkId": item["linkId"], "answer": [
            {"valueCoding": dict(item["answerOption"][value]["valueCoding"])}]})
    return {"resourceType": "QuestionnaireResponse",
            "questionnaire": f"{QUESTIONNAIRES}/{score.instrument}|1.0.0",
            "status": "completed", "subject": {"reference": f"Patient/{patient_id}"},
            "authored": score.at.isoformat().replace("+00:00", "Z"),
            "author": {"reference": author}, "item": answers}


def directory(seed: int) -> list[dict]:
    """Clinics with a staff role each, providers with a service and a site each."""
    out: list[dict] = []
    for n, (org_id, name) in enumerate(CLINICS):
        out += [{"resourceType": "Organization", "id": org_id, "active": True, "name": name,
                 "identifier": [{"system": NPI, "value": f"17{seed % 100:02d}0000{n:02d}"}]},
                {"resourceType": "Practitioner", "id": f"{org_id}-dr", "active": True,
                 "name": [{"prefix": ["Dr"], "given": ["Robin"], "family": f"Lee {n + 1}"}]},
                {"resourceType": "PractitionerRole", "id": f"{org_id}-role", "active": True,
                 "practitioner": {"reference": f"Practitioner/{org_id}-dr"},
                 "organization": {"reference": f"Organization/{org_id}"}}]
    for n, (org_id, name, category, category_name, service) in enumerate(PROVIDERS):
        out += [{"resourceType": "Organization", "id": org_id, "active": True, "name": name,
                 "identifier": [{"system": NPI, "value": f"18{seed % 100:02d}0000{n:02d}"}]},
                {"resourceType": "Location", "id": f"{org_id}-site", "status": "active",
                 "name": f"{name} office",
                 "address": {"line": [f"{10 + n} Main St"], "city": "Boston", "state": "MA"},
                 "position": {"latitude": 42.35 + n / 100, "longitude": -71.06}},
                {"resourceType": "HealthcareService", "id": f"{org_id}-service", "active": True,
                 "name": service, "providedBy": {"reference": f"Organization/{org_id}"},
                 "category": [{"coding": [{"system": SERVICE_CATEGORY, "code": category,
                                           "display": category_name}]}],
                 "location": [{"reference": f"Location/{org_id}-site"}]}]
    return out


def load(settings, population: Population) -> list[str]:  # type: ignore[no-untyped-def]
    """Write the population through the write path, each event at its own time; returns
    the ids of the referral Tasks (successors of redirects included)."""
    from fhir_server.auth.context import SYSTEM, AccessContext
    from fhir_server.auth.scopes import parse_scopes
    from fhir_server.interactions import crud
    from fhir_server.interactions.context import Call
    from fhir_server.jobs import stalled_sweep
    from fhir_server.storage.repository import replay_clock

    services, operations = _services(settings)
    base = settings.base_url or "http://localhost/fhir"

    def call_as(org: str | None) -> Call:
        access = SYSTEM if org is None else AccessContext(
            client_id="synthetic-population", organization=f"Organization/{org}",
            scopes=parse_scopes("system/*.cruds"))
        return Call(services=services, base_url=base, access=access,
                    prefer_return="representation")

    def at(moment: datetime) -> int:
        return int(moment.timestamp() * 1_000_000)

    with replay_clock(at(population.start - DAY * 60)):
        for resource in directory(population.seed):
            crud.update(call_as(None), resource["resourceType"], resource["id"], resource)
    task_ids: list[str] = []
    for moment, kind, details in _resources_of(population):
        with replay_clock(at(moment)):
            if kind == "patient":
                clinic = CLINICS[population.referrals[details.index].clinic][0]  # type: ignore[union-attr]
                _write_patient(crud, call_as(clinic), details, population.seed)
            elif kind == "score":
                patient, score = details  # type: ignore[misc]
                clinic = CLINICS[population.referrals[patient.index].clinic][0]
                qr = questionnaire_response(patient.patient_id, score,
                                            f"PractitionerRole/{clinic}-role")
                crud.create(call_as(clinic), "QuestionnaireResponse", qr)
            elif kind == "referral":
                patient_id = population.patients[details.patient].patient_id  # type: ignore[union-attr]
                _send(crud, call_as, details, patient_id)
                task_ids.append(details.task_id)  # type: ignore[union-attr]
            elif kind == "redirect":
                new_id = _redirect(operations, call_as, details)
                details.successor.task_id = new_id  # type: ignore[union-attr]
                task_ids.append(new_id)
            elif kind == "step":
                referral, step = details  # type: ignore[misc]
                _move(crud, call_as, referral, step)
            else:
                stalled_sweep(services, now=moment)
    services.db.dispose()
    return task_ids


def _services(settings):  # type: ignore[no-untyped-def]
    """The services and operations, built as every entry point builds them."""
    from fhir_server.wiring import build_services

    services = build_services(settings)
    return services, services.operations


def _write_patient(crud, call, patient: Patient, seed: int) -> None:  # type: ignore[no-untyped-def]
    crud.update(call, "Patient", patient.patient_id, patient_resource(patient, seed))
    coverage = coverage_resource(patient)
    if coverage is not None:
        crud.update(call, "Coverage", coverage["id"], coverage)


def _send(crud, call_as, referral: Referral, patient_id: str) -> None:  # type: ignore[no-untyped-def]
    clinic = CLINICS[referral.clinic][0]
    provider = PROVIDERS[referral.provider]
    authored = referral.referred.isoformat().replace("+00:00", "Z")
    sr_id = f"{referral.task_id}-sr"
    crud.update(call_as(clinic), "ServiceRequest", sr_id, {
        "resourceType": "ServiceRequest", "id": sr_id,
        "meta": {"profile": [f"{SDOHCC}/SDOHCC-ServiceRequest"]},
        "status": "active", "intent": "order", "priority": referral.priority,
        "category": [{"coding": [{"system": SNOMED, "code": "410606002",
                                  "display": "Social service procedure"}]}],
        "code": {"coding": [{"system": SNOMED, "code": "390866009",
                             "display": "Referral to mental health team"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "authoredOn": authored,
        "requester": {"reference": f"PractitionerRole/{clinic}-role"},
        "performer": [{"reference": f"HealthcareService/{provider[0]}-service"}]})
    task = {
        "resourceType": "Task", "id": referral.task_id,
        "meta": {"profile": [f"{SDOHCC}/SDOHCC-TaskForReferralManagement"]},
        "status": "requested", "intent": "order", "priority": referral.priority,
        "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code",
                             "code": "fulfill"}]},
        "focus": {"reference": f"ServiceRequest/{sr_id}"},
        "for": {"reference": f"Patient/{patient_id}"},
        "authoredOn": authored,
        "requester": {"reference": f"PractitionerRole/{clinic}-role"},
        "owner": {"reference": f"Organization/{provider[0]}"}}
    crud.update(call_as(clinic), "Task", task["id"], task)


def _move(crud, call_as, referral: Referral, step: Step) -> None:  # type: ignore[no-untyped-def]
    from fhir_server.storage.repository import Repository

    provider = PROVIDERS[referral.provider][0]
    call = call_as(provider)
    with call.db.read() as conn:
        task = Repository(conn).read("Task", referral.task_id).resource()
    task["status"] = step.status
    if step.reason:
        task["statusReason"] = {"text": step.reason}
    if step.status == "completed":
        task["output"] = [{"type": {"coding": [{
            "system": "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/"
                      "SDOHCC-CodeSystemTemporaryCodes", "code": "resulting-activity"}]},
            "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "304891004",
                                                 "display": "Cognitive behavioral therapy"}]}}]
    crud.update(call, "Task", referral.task_id, task,
                if_match=f'W/"{task["meta"]["versionId"]}"')


def _redirect(operations, call_as, referral: Referral) -> str:  # type: ignore[no-untyped-def]
    provider = PROVIDERS[referral.provider][0]
    target = PROVIDERS[referral.successor.provider][0]  # type: ignore[union-attr]
    op = operations.find("redirect", "instance", "Task")
    result = op.handler(call_as(provider), "Task", referral.task_id, [], {
        "resourceType": "Parameters", "parameter": [
            {"name": "target", "valueReference": {
                "reference": f"HealthcareService/{target}-service"}},
            {"name": "reason", "valueString": "Better fit: they offer this service"}]})
    return result.stored.res_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--referrals", type=int, default=60)
    parser.add_argument("--start", type=date.fromisoformat, default=None,
                        help="first day of the referrals (default: 26 weeks ago)")
    args = parser.parse_args(argv)
    from fhir_server.config import Settings
    from fhir_server.storage.db import Database
    from fhir_server.storage.migrate import upgrade

    today = datetime.now(UTC).date()
    start = args.start or today - timedelta(weeks=26, days=today.weekday())
    settings = Settings.from_env()
    db = Database(settings.database_url)
    upgrade(db)
    db.dispose()
    population = build(args.seed, args.referrals, start)
    tasks = load(settings, population)
    print(f"{len(population.patients)} patients, {len(tasks)} referral Tasks from "
          f"{population.start:%d %b %Y} to {population.end:%d %b %Y} (seed {args.seed})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
