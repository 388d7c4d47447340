"""Server time of the outcomes dashboard at 100,000 referrals (goal: p95 < 1 s).

    python -m bench.dashboard_bench [--referrals 100000] [--runs 20]
                                    [--backend sqlite|postgresql] [--reuse PATH]

The population is written through the storage layer, each version at the time it happened
(`replay_clock`): 40 receiving organizations with a HealthcareService each, 10 referring
clinics, and per referral a Patient (equity codes; most with a Coverage), an SDOHCC
ServiceRequest, the referral Task with every status it went through (3 to 5 versions:
accepted, declined, redirected, cancelled, in care, completed, failed, still waiting) and
the PHQ-9 / GAD-7 total-score Observations before it and after care started. Referrals are
spread over the 12 months before the run. The facts the measures count are then computed
from that history by `rebuild` (what the migration does on an existing database).

The whole server (auth on) runs on a loopback port; a `requests` session signs in through
the authorization server and times, one request at a time: the dashboard page (its one
`$referral-metrics` call with four groupings and its stalled-list search, through the API in
process with the user's token, and the rendering) for the network administrator and for the
manager of one receiving organization, over the last 12 months (every referral) and the
last 90 days; and `$referral-metrics` alone. The baseline, in the same run, is one API
search (`Task?code=fulfill&_count=25`) with the administrator's token.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SDOHCC = "http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition"
CATEGORY = "http://mh-referral.example.org/fhir/CodeSystem/mh-service-category"
CATEGORIES = ("therapy", "psychiatry", "peer-support", "substance-use", "collaborative-care")
US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition"
OMB = "urn:oid:2.16.840.1.113883.6.238"
RACES = ("2106-3", "2054-5", "2028-9", "1002-5", "2076-8")
PATHS = (("completed", 30), ("in-care", 14), ("accepted", 8), ("waiting", 10),
         ("rejected", 10), ("redirected", 8), ("cancelled", 12), ("failed", 8))
PROVIDERS, CLINICS = 40, 10
HOUR = timedelta(hours=1)


def _at(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def directory(repo) -> None:  # type: ignore[no-untyped-def]
    for n in range(PROVIDERS):
        repo.update({"resourceType": "Organization", "id": f"prov-{n}", "active": True,
                     "name": f"Provider {n:02d} Behavioral Health"}, f"prov-{n}")
        repo.update({"resourceType": "HealthcareService", "id": f"prov-{n}-service",
                     "active": True, "name": f"Provider {n:02d} services",
                     "providedBy": {"reference": f"Organization/prov-{n}"},
                     "category": [{"coding": [{"system": CATEGORY,
                                               "code": CATEGORIES[n % len(CATEGORIES)]}]}]},
                    f"prov-{n}-service")
    for n in range(CLINICS):
        repo.update({"resourceType": "Organization", "id": f"clinic-{n}", "active": True,
                     "name": f"Clinic {n}"}, f"clinic-{n}")
        repo.update({"resourceType": "PractitionerRole", "id": f"clinic-{n}-role",
                     "active": True, "organization": {"reference": f"Organization/clinic-{n}"}},
                    f"clinic-{n}-role")


def _score(patient: str, code: str, value: int, moment: datetime) -> dict:
    return {"resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                "observation-category", "code": "survey"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": f"Patient/{patient}"}, "effectiveDateTime": _iso(moment),
            "valueQuantity": {"value": value, "unit": "{score}",
                              "system": "http://unitsofmeasure.org", "code": "{score}"}}


def referral(repo, rng: random.Random, i: int, made: datetime) -> None:  # type: ignore[no-untyped-def]
    """One patient, its screenings and its referral with the history of its Task."""
    from fhir_server.storage.repository import replay_clock

    patient, sr, task_id = f"p{i}", f"sr{i}", f"t{i}"
    provider, clinic = rng.randrange(PROVIDERS), rng.randrange(CLINICS)
    base = rng.randint(5, 24)
    with replay_clock(_at(made - timedelta(days=rng.randint(2, 20)))):
        repo.update({
            "resourceType": "Patient", "id": patient, "active": True,
            "gender": rng.choice(("female", "male", "female", "other")),
            "birthDate": f"{rng.randint(1940, 2010)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}",
            "extension": [{"url": f"{US_CORE}/us-core-race", "extension": [
                {"url": "ombCategory", "valueCoding": {"system": OMB,
                                                       "code": rng.choice(RACES)}},
                {"url": "text", "valueString": "race"}]}],
            "communication": [{"language": {"coding": [{"code": rng.choice(
                ("en", "en", "en", "es", "vi", "zh"))}]}, "preferred": True}]}, patient)
        if rng.random() < 0.85:
            repo.update({"resourceType": "Coverage", "id": f"cov{i}", "status": "active",
                         "type": {"coding": [{"system": "http://mh-referral.example.org/fhir/"
                                                        "CodeSystem/payer-type",
                                              "code": rng.choice(("medicaid", "private",
                                                                  "medicare"))}]},
                         "beneficiary": {"reference": f"Patient/{patient}"},
                         "payor": [{"display": "Plan"}]}, f"cov{i}")
        repo.create(_score(patient, "44261-6", base, made - timedelta(days=1)))
    with replay_clock(_at(made)):
        repo.update({"resourceType": "ServiceRequest", "id": sr, "status": "active",
                     "meta": {"profile": [f"{SDOHCC}/SDOHCC-ServiceRequest"]},
                     "intent": "order", "subject": {"reference": f"Patient/{patient}"},
                     "requester": {"reference": f"PractitionerRole/clinic-{clinic}-role"},
                     "performer": [{"reference":
                                    f"HealthcareService/prov-{provider}-service"}],
                     "code": {"text": "Mental health referral"}}, sr)
    task = {"resourceType": "Task", "id": task_id, "status": "requested", "intent": "order",
            "meta": {"profile": [f"{SDOHCC}/SDOHCC-TaskForReferralManagement"]},
            "priority": rng.choice(("routine", "routine", "urgent", "asap")),
            "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code",
                                 "code": "fulfill"}]},
            "focus": {"reference": f"ServiceRequest/{sr}"},
            "for": {"reference": f"Patient/{patient}"}, "authoredOn": _iso(made),
            "requester": {"reference": f"PractitionerRole/clinic-{clinic}-role"},
            "owner": {"reference": f"Organization/prov-{provider}"}}
    path = rng.choices([p for p, _w in PATHS], weights=[w for _p, w in PATHS])[0]
    moment = made
    steps = {"completed": ["accepted", "in-progress", "completed"],
             "in-care": ["accepted", "in-progress"], "accepted": ["accepted"],
             "waiting": [], "rejected": ["rejected"], "redirected": ["rejected"],
             "cancelled": ["accepted", "cancelled"],
             "failed": ["accepted", "in-progress", "failed"]}[path]
    with replay_clock(_at(moment)):
        repo.update(dict(task), task_id)
    for status in steps:
        moment += HOUR * rng.choice((2, 6, 20, 50, 100, 200, 400))
        task["status"] = status
        if status in ("rejected", "cancelled", "failed"):
            task["statusReason"] = {"text": "Reason"}
        if path == "redirected":
            task["extension"] = [{"url": "http://mh-referral.example.org/fhir/"
                                         "StructureDefinition/task-redirected-to",
                                  "valueReference": {"reference": f"Task/{task_id}-next"}}]
        with replay_clock(_at(moment)):
            repo.update(dict(task), task_id)
        if status == "in-progress" and rng.random() < 0.7:
            with replay_clock(_at(moment + timedelta(days=rng.randint(29, 83)))):
                repo.create(_score(patient, "44261-6", int(base * rng.random()),
                                   moment + timedelta(days=rng.randint(29, 83))))


def populate(server, referrals: int, seed: int = 5) -> float:  # type: ignore[no-untyped-def]
    """Write the population (storage layer, batches of 500) then compute the facts."""
    from fhir_server.features.outcomes import rebuild
    from fhir_server.storage.repository import Repository

    rng = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=0)
    started = time.perf_counter()
    with server.db.write() as conn:
        directory(Repository(conn))
    for first in range(0, referrals, 500):
        with server.db.write() as conn:
            repo = Repository(conn)
            for i in range(first, min(first + 500, referrals)):
                made = now - timedelta(days=364) + timedelta(
                    seconds=rng.randint(0, 350 * 86400))
                referral(repo, rng, i, made)
    with server.db.write() as conn:
        count = rebuild(conn)
    assert count == referrals, count
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--referrals", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--reuse", help="SQLite file to keep the population in (and reuse)")
    args = parser.parse_args()
    import logging

    import requests

    from bench.web_bench import measure

    logging.disable(logging.INFO)
    from fhir_server.storage.db import Database
    from fhir_server.storage.migrate import upgrade
    from fhir_server.web.sealing import Sealer
    from tests.dbs import fresh_database_url
    from tests.web_support import sign_in_http, start_web_server

    tmp = Path(tempfile.mkdtemp(prefix="dashboard-bench-"))
    if args.backend == "postgresql" and not os.environ.get("FHIR_TEST_PG_URL"):
        raise SystemExit("--backend postgresql needs FHIR_TEST_PG_URL (tools/test-postgres.sh)")
    reuse = args.reuse and args.backend == "sqlite" and Path(args.reuse).exists()
    url = f"sqlite:///{Path(args.reuse).resolve()}" if args.reuse and args.backend == "sqlite" \
        else fresh_database_url(args.backend, tmp)
    db = Database(url)
    upgrade(db)
    server, live = start_web_server(db, tmp)
    try:
        load_seconds = None if reuse else populate(server, args.referrals)
        if args.backend == "postgresql":
            with db.engine.connect() as conn:
                conn.exec_driver_sql("COMMIT")
                conn.exec_driver_sql("VACUUM ANALYZE")
        net = server.network
        net.staff("bench_admin", "clinic-0", "Ada", "Admin", admin=True)
        net.staff("bench_manager", "prov-7", "Max", "Manager", manager=True)
        sessions = {who: sign_in_http(server, who, "/dashboard")
                    for who in ("bench_admin", "bench_manager")}
        cookie = sessions["bench_admin"].cookies.get("mhr_dashboard", path="/dashboard")
        token = Sealer.from_file(server.secret_file).open(cookie, 3600)["hub"]["access_token"]
        api = requests.Session()
        api.headers.update({"Authorization": f"Bearer {token}",
                            "Accept": "application/fhir+json"})
        today = datetime.now(UTC).date()
        year = f"start={today - timedelta(days=364)}&end={today}"
        quarter = f"start={today - timedelta(days=89)}&end={today}"
        pages = {
            "dashboard, administrator, 12 months": (sessions["bench_admin"], year),
            "dashboard, administrator, 90 days": (sessions["bench_admin"], quarter),
            "dashboard, manager, 12 months": (sessions["bench_manager"], year),
            "dashboard, manager, 90 days": (sessions["bench_manager"], quarter),
        }
        root = server.root
        for session, query in pages.values():  # warm: discovery, plans, caches
            measure(session, f"{root}/dashboard/?{query}", 2)
        baseline = measure(api, f"{server.base}/Task?code=http://hl7.org/fhir/CodeSystem/"
                                f"task-code|fulfill&_count=25", args.runs)
        results = {name: measure(session, f"{root}/dashboard/?{query}", args.runs)
                   for name, (session, query) in pages.items()}
        results["$referral-metrics alone, administrator, 12 months"] = measure(
            api, f"{server.base}/$referral-metrics?group-by=owner,age-band&start="
                 f"{today - timedelta(days=364)}&end={today + timedelta(days=1)}", args.runs)
        report = {"backend": args.backend, "referrals": args.referrals,
                  "load_and_rebuild_seconds": round(load_seconds, 1) if load_seconds else
                  "reused", "baseline_api_search": baseline, "pages": results,
                  "ratio_p95_to_baseline": {n: round(r["p95_ms"] / baseline["p95_ms"], 1)
                                            for n, r in results.items()},
                  "goal_p95_ms": 1000,
                  "met": all(r["p95_ms"] < 1000 for n, r in results.items()
                             if n.startswith("dashboard"))}
        print(json.dumps(report, indent=2))
    finally:
        live.stop()
        db.dispose()


if __name__ == "__main__":
    main()
