"""Generate the synthetic behavioral-health directory (fixed seed; output is committed).

    .venv/bin/python examples/directory/generate.py [--services N] [--out FILE]

Writes a FHIR transaction Bundle (PUT with stable ids, so loading twice changes nothing) of
Organizations, Locations (with coordinates around Boston, MA), HealthcareServices following
mappers/DIRECTORY.md, Endpoints and PractitionerRoles. All names are invented.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mappers import directory_model as dm  # noqa: E402

SEED = 20261127
AS_OF = date(2026, 11, 20)  # capacity confirmations are dated relative to this day
CENTER = (42.3601, -71.0589)
CATEGORY_WEIGHTS = {"therapy": 30, "psychiatry": 15, "collaborative-care": 10,
                    "substance-use": 15, "peer-support": 10, "community": 10, "crisis": 10}
LANGUAGES = ["en", "es", "pt", "ht", "zh", "vi", "ar"]
TOWNS = ["Dorchester", "Roxbury", "Cambridge", "Somerville", "Quincy", "Chelsea", "Lynn",
         "Brockton", "Newton", "Waltham", "Malden", "Revere", "Framingham", "Lowell", "Salem"]
ORG_WORDS = ["Harbor", "Beacon", "Riverside", "Commonwealth", "Bayview", "Northshore",
             "Southside", "Greenway", "Hilltop", "Lighthouse", "Evergreen", "Crossroads"]
ORG_KINDS = ["Behavioral Health", "Counseling Center", "Community Health Center",
             "Recovery Services", "Family Services", "Wellness Collaborative"]
SERVICE_NAMES = {
    "therapy": ["Individual therapy (CBT)", "Family therapy", "Trauma-focused therapy",
                "Group counseling", "Adolescent counseling"],
    "psychiatry": ["Outpatient psychiatry", "Medication management", "Child psychiatry"],
    "collaborative-care": ["Collaborative care program", "Integrated behavioral health"],
    "substance-use": ["Outpatient addiction treatment", "Medication for opioid use disorder",
                      "Intensive outpatient (SUD)"],
    "peer-support": ["Peer recovery coaching", "Peer support group"],
    "community": ["Community wellness group", "Support and navigation services"],
    "crisis": ["Mobile crisis team", "Crisis stabilization", "Urgent behavioral health walk-in"],
}


def _ref(res_type: str, res_id: str) -> dict:
    return {"reference": f"{res_type}/{res_id}"}


def _point(rng: random.Random) -> tuple[float, float]:
    return (round(CENTER[0] + rng.uniform(-0.35, 0.35), 5),
            round(CENTER[1] + rng.uniform(-0.45, 0.45), 5))


def _organization(i: int, rng: random.Random) -> dict:
    name = f"{rng.choice(ORG_WORDS)} {rng.choice(ORG_KINDS)} of {rng.choice(TOWNS)}"
    return {"resourceType": "Organization", "id": f"dir-org-{i:03d}", "active": True,
            "name": name,
            "telecom": [{"system": "phone", "value": f"617-555-{1000 + i:04d}"}]}


def _location(org: dict, j: int, rng: random.Random) -> dict:
    lat, lon = _point(rng)
    town = rng.choice(TOWNS)
    return {"resourceType": "Location", "id": f"{org['id']}-loc-{j}", "status": "active",
            "mode": "instance", "name": f"{org['name']} - {town}",
            "address": {"line": [f"{rng.randint(1, 999)} Main Street"], "city": town,
                        "state": "MA", "country": "US"},
            "position": {"latitude": lat, "longitude": lon},
            "managingOrganization": _ref("Organization", org["id"])}


def _endpoint(org: dict) -> dict:
    return {"resourceType": "Endpoint", "id": f"{org['id']}-ep", "status": "active",
            "connectionType": {"system": "http://terminology.hl7.org/CodeSystem/"
                               "endpoint-connection-type", "code": "hl7-fhir-rest"},
            "name": f"{org['name']} referral intake",
            "managingOrganization": _ref("Organization", org["id"]),
            "payloadType": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                         "endpoint-payload-type", "code": "any"}]}],
            "address": f"https://fhir.{org['id']}.example.org/r4"}


def _service(k: int, org: dict, locs: list[dict], cat: str, rng: random.Random) -> dict:
    langs = ["en"] + rng.sample(LANGUAGES[1:], rng.choice([0, 0, 1, 1, 2]))
    modalities = {"in-person"} if cat == "crisis" else set(
        rng.choice([["in-person"], ["telehealth"], ["in-person", "telehealth"]]))
    if rng.random() < 0.4:
        modalities.add("interpreter")
    coverage = sorted(rng.sample(list(dm.PAYER_TYPES), rng.randint(1, 4)))
    status = rng.choices(list(dm.CAPACITY_CODES), weights=[55, 15, 20, 10])[0]
    wait = 0 if cat == "crisis" else rng.choice([2, 5, 7, 10, 14, 21, 30, 45])
    confirmed = AS_OF - timedelta(days=rng.choice([0, 1, 3, 7, 14, 20, 45, 90]))
    age = rng.choice([(None, None), (18, None), (12, 17), (None, 17), (18, 64), (65, None)])
    svc: dict = {
        "resourceType": "HealthcareService", "id": f"dir-svc-{k:04d}", "active": True,
        "providedBy": _ref("Organization", org["id"]),
        "category": [dm.coding(dm.SERVICE_CATEGORY_CS, cat, dm.SERVICE_CATEGORIES[cat])],
        "type": [dm.coding(dm.SNOMED, dm.CATEGORY_REFERRAL_CODE[cat],
                           dm.REFERRAL_DISPLAY[dm.CATEGORY_REFERRAL_CODE[cat]])],
        "name": f"{rng.choice(SERVICE_NAMES[cat])} - {org['name']}",
        "location": [_ref("Location", loc["id"]) for loc in locs],
        "communication": [dm.coding(dm.BCP47, lang) for lang in langs],
        "characteristic": [dm.coding(dm.MODALITY_CS, m, dm.MODALITIES[m])
                           for m in sorted(modalities)],
        "referralMethod": [dm.coding("http://terminology.hl7.org/CodeSystem/service-referral-"
                                     "method", "elec", "Secure Messaging")],
        "endpoint": [_ref("Endpoint", f"{org['id']}-ep")],
        "extension": [dm.coverage_extension(c) for c in coverage],
    }
    if age != (None, None):
        svc["extension"].append(dm.age_extension(*age))
    notes = {"waitlist": f"About {rng.randint(3, 30)} on the waitlist"}.get(status)
    dm.set_capacity(svc, status, notes, wait,
                    confirmed=datetime(confirmed.year, confirmed.month, confirmed.day, 12))
    if cat == "crisis" and rng.random() < 0.7:
        svc["availableTime"] = dm.always_open_time()
    else:
        svc["availableTime"] = [{"daysOfWeek": ["mon", "tue", "wed", "thu", "fri"],
                                 "availableStartTime": "08:00:00",
                                 "availableEndTime": "18:00:00"}]
    return svc


def _role(svc: dict, org: dict) -> dict:
    return {"resourceType": "PractitionerRole", "id": f"{svc['id']}-role", "active": True,
            "organization": _ref("Organization", org["id"]),
            "location": svc["location"], "healthcareService": [_ref("HealthcareService",
                                                                    svc["id"])],
            "code": [{"coding": [{"system": "http://snomed.info/sct", "code": "309295000",
                                  "display": "Physician"}]}]}


def generate(services: int = 240, seed: int = SEED) -> dict:
    """The directory as a transaction Bundle (deterministic for a seed)."""
    rng = random.Random(seed)
    resources: list[dict] = []
    orgs = []
    for i in range(max(1, services // 4)):
        org = _organization(i, rng)
        locs = [_location(org, j, rng) for j in range(rng.choice([1, 1, 2]))]
        orgs.append((org, locs))
        resources += [org, *locs, _endpoint(org)]
    cats, weights = zip(*CATEGORY_WEIGHTS.items(), strict=True)
    for k in range(services):
        org, locs = orgs[k % len(orgs)]
        cat = rng.choices(cats, weights=weights)[0]
        svc = _service(k, org, locs, cat, rng)
        resources.append(svc)
        if cat in ("psychiatry", "therapy", "collaborative-care"):
            resources.append(_role(svc, org))
    entries = []
    for res in resources:
        path = f"{res['resourceType']}/{res['id']}"
        entries.append({"fullUrl": f"http://localhost/fhir/{path}", "resource": res,
                        "request": {"method": "PUT", "url": path}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def hsds_sample(seed: int = SEED, organizations: int = 4) -> dict:
    """A small Open Referral HSDS 3.0 dataset (table form) for `import-hsds`."""
    rng = random.Random(seed + 1)
    tables: dict[str, list[dict]] = {t: [] for t in (
        "organization", "service", "location", "service_at_location", "language", "phone",
        "schedule", "taxonomy_term", "attribute", "service_capacity")}
    for code in [*dm.SERVICE_CATEGORIES, *dm.MODALITIES, *dm.PAYER_TYPES]:
        tables["taxonomy_term"].append({"id": f"tt-{code}", "code": code, "name": code,
                                        "taxonomy": "mh-referral"})
    cats = list(dm.SERVICE_CATEGORIES)
    for i in range(organizations):
        oid = f"hsds-org-{i}"
        word = ORG_WORDS[i % len(ORG_WORDS)]
        tables["organization"].append({"id": oid, "name": f"{word} Community Services",
                                       "description": "Synthetic organization",
                                       "website": f"https://org{i}.example.org"})
        lat, lon = _point(rng)
        tables["location"].append({"id": f"hsds-loc-{i}", "organization_id": oid,
                                   "location_type": "physical",
                                   "name": f"{TOWNS[i % len(TOWNS)]} office",
                                   "latitude": lat, "longitude": lon,
                                   "city": TOWNS[i % len(TOWNS)],
                                   "state_province": "MA"})
        for j in range(3):
            sid = f"hsds-svc-{i}-{j}"
            cat = cats[(i * 3 + j) % len(cats)]
            tables["service"].append({
                "id": sid, "organization_id": oid, "status": "active",
                "name": f"{SERVICE_NAMES[cat][0]} ({word})",
                "description": "Synthetic service", "minimum_age": 18 if j else None,
                "eligibility_description": "Adults" if j else "All ages",
                "application_process": "Call or send a referral"})
            tables["service_at_location"].append({"id": f"sal-{sid}", "service_id": sid,
                                                  "location_id": f"hsds-loc-{i}"})
            for code in (cat, "in-person", rng.choice(list(dm.PAYER_TYPES))):
                tables["attribute"].append({"id": f"attr-{sid}-{code}", "link_id": sid,
                                            "link_entity": "service", "link_type": "service",
                                            "taxonomy_term_id": f"tt-{code}"})
            for lang in ("en", rng.choice(LANGUAGES[1:])):
                tables["language"].append({"id": f"lang-{sid}-{lang}", "service_id": sid,
                                           "code": lang, "name": lang})
            tables["phone"].append({"id": f"ph-{sid}", "service_id": sid,
                                    "number": f"617-555-{2000 + i * 10 + j}"})
            tables["schedule"].append({"id": f"sch-{sid}", "service_id": sid, "freq": "WEEKLY",
                                       "byday": "MO,TU,WE,TH,FR", "opens_at": "09:00",
                                       "closes_at": "17:00"})
            tables["service_capacity"].append({"id": f"cap-{sid}", "service_id": sid,
                                               "available": rng.randint(0, 5), "maximum": 10,
                                               "updated": "2026-11-20"})
    return tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--services", type=int, default=240)
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).with_name("directory-bundle.json"))
    args = parser.parse_args()
    bundle = generate(args.services)
    args.out.write_text(json.dumps(bundle, indent=1) + "\n")
    print(f"{args.out}: {len(bundle['entry'])} entries, {args.services} services")
    sample = Path(__file__).with_name("hsds-sample.json")
    sample.write_text(json.dumps(hsds_sample(), indent=1) + "\n")
    print(f"{sample}: HSDS 3.0 sample")


if __name__ == "__main__":
    main()
