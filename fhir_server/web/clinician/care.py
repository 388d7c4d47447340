"""Recommended care (`Patient/[id]/$recommend-care`) and matched providers
(`HealthcareService/$match`), read into what the pages show."""

from __future__ import annotations

from dataclasses import dataclass, field

from fhir_server.web import words
from fhir_server.web.api import FhirApi, entries
from fhir_server.web.names import Names

SD = "http://mh-referral.example.org/fhir/StructureDefinition"
MATCH_REASON = f"{SD}/match-reason"
MATCH_FAILED = f"{SD}/match-failed"
NEAR_MISS = f"{SD}/match-near-miss"  # a near miss has no search.mode; this marks it
GEOLOCATION = "http://hl7.org/fhir/StructureDefinition/geolocation"
RADII = ("10", "25", "50", "100")


@dataclass
class Recommendation:
    level: str = ""
    level_words: str = ""
    services: list[tuple[str, str]] = field(default_factory=list)  # (SNOMED code, display)
    priority: str = ""
    action: str = ""
    rationale: list[str] = field(default_factory=list)
    safety: bool = False
    crisis: str = ""
    sign_off: bool = True
    sign_off_note: str = ""

    @property
    def refers(self) -> bool:
        """Whether the recommendation leads to a referral."""
        return self.level not in ("", "none", "insufficient", "full-screen")


def recommendation(api: FhirApi, patient_id: str) -> Recommendation:
    """`Patient/[id]/$recommend-care` in words."""
    params = api.operation(f"Patient/{patient_id}/$recommend-care")
    out = Recommendation()
    for p in (params or {}).get("parameter") or []:
        name = p.get("name")
        if name == "level-of-care":
            coding = _coding(p)
            out.level, out.level_words = coding.get("code", ""), coding.get("display", "")
        elif name == "service-category":
            coding = _coding(p)
            out.services.append((coding.get("code", ""), coding.get("display", "")))
        elif name == "priority":
            out.priority = p.get("valueCode", "")
        elif name == "action":
            out.action = p.get("valueString", "")
        elif name == "rationale":
            out.rationale.append(p.get("valueString", ""))
        elif name == "safety-flag-active":
            out.safety = bool(p.get("valueBoolean"))
        elif name == "crisis-resources":
            out.crisis = p.get("valueString", "")
        elif name == "requires-clinical-sign-off":
            out.sign_off = bool(p.get("valueBoolean"))
        elif name == "sign-off-note":
            out.sign_off_note = p.get("valueString", "")
    return out


def _coding(param: dict) -> dict:
    """The Coding of a parameter given as valueCoding or valueCodeableConcept."""
    if isinstance(param.get("valueCoding"), dict):
        return param["valueCoding"]
    concept = param.get("valueCodeableConcept") or {}
    return next(iter(concept.get("coding") or []), {})


@dataclass
class Match:
    service: dict
    name: str
    organization: str
    organization_ref: str
    score: float | None
    reasons: list[str]
    failed: list[str]
    address: str
    languages: str
    modalities: str

    @property
    def id(self) -> str:
        return str(self.service.get("id"))


@dataclass
class MatchResult:
    matches: list[Match]
    near_misses: list[Match]
    criteria: list[str]
    total: int


def match_parameters(patient: dict, rec: Recommendation, modality: str = "",
                     radius: str = "") -> dict:
    """The type-level `$match` criteria for this patient and recommendation."""
    params: list[dict] = []
    if rec.level and rec.refers:
        params.append({"name": "level-of-care", "valueCode": rec.level})
    else:
        params += [{"name": "service-category", "valueCode": code}
                   for code, _ in rec.services]
    if rec.safety:
        params.append({"name": "safety-flag", "valueBoolean": True})
    elif rec.priority:
        params.append({"name": "priority", "valueCode": rec.priority})
    if patient.get("birthDate"):
        params.append({"name": "birthdate", "valueDate": patient["birthDate"][:10]})
    language = _language_code(patient)
    if language:
        params.append({"name": "language", "valueCode": language})
    point = _point(patient)
    if point and modality != "telehealth":
        params.append({"name": "near", "valueString": f"{point[0]}|{point[1]}"})
        if radius in RADII:
            params.append({"name": "radius", "valueDecimal": float(radius)})
    if modality in ("telehealth", "in-person"):
        params.append({"name": "modality", "valueCode": modality})
    params += [{"name": "count", "valueInteger": 10}, {"name": "near-misses",
                                                        "valueInteger": 5}]
    return {"resourceType": "Parameters", "parameter": params}


def _language_code(patient: dict) -> str:
    comms = patient.get("communication") or []
    chosen = next((c for c in comms if c.get("preferred")), comms[0] if comms else None)
    for coding in ((chosen or {}).get("language") or {}).get("coding") or []:
        if coding.get("code"):
            return str(coding["code"]).lower()
    return ""


def _point(patient: dict) -> tuple[float, float] | None:
    for address in patient.get("address") or []:
        for ext in address.get("extension") or []:
            if ext.get("url") == GEOLOCATION:
                sub = {s.get("url"): s.get("valueDecimal") for s in ext.get("extension") or []}
                if isinstance(sub.get("latitude"), int | float) and isinstance(
                        sub.get("longitude"), int | float):
                    return float(sub["latitude"]), float(sub["longitude"])
    return None


def find_providers(api: FhirApi, parameters: dict,
                   operation: str = "HealthcareService/$match") -> MatchResult:
    """Run `$match` (type-level, or `ServiceRequest/<id>/$match` for the criteria of an
    existing referral) and name every provider and place."""
    bundle = api.operation(operation, body=parameters)
    all_entries = bundle.get("entry") or []
    shown = [e["resource"] for e in all_entries
             if (e.get("search") or {}).get("mode") == "match" and e.get("resource")]
    misses = [e["resource"] for e in all_entries if e.get("resource") and any(
        x.get("url") == NEAR_MISS and x.get("valueBoolean")
        for x in (e.get("search") or {}).get("extension") or [])]
    extra = {e["resource"]["id"]: e.get("search") or {} for e in bundle.get("entry") or []
             if (e.get("resource") or {}).get("resourceType") == "HealthcareService"}
    names = Names(api)
    for service in shown + misses:
        names.want(service.get("providedBy"))
        for loc in service.get("location") or []:
            names.want(loc)
    names.fetch()
    criteria = [i.get("diagnostics", "") for o in entries(bundle, "outcome")
                for i in o.get("issue") or []]

    def build(service: dict) -> Match:
        search = extra.get(service["id"], {})
        exts = search.get("extension") or []
        location = names.get((service.get("location") or [{}])[0])
        langs = [words.language_name(c.get("code")) for concept in
                 service.get("communication") or [] for c in concept.get("coding") or []]
        modes = [words.concept_text(c) for c in service.get("characteristic") or []]
        return Match(service=service, name=service.get("name") or "(unnamed service)",
                     organization=names.name(service.get("providedBy"), ""),
                     organization_ref=(service.get("providedBy") or {}).get("reference", ""),
                     score=search.get("score"),
                     reasons=[e["valueString"] for e in exts if e.get("url") == MATCH_REASON],
                     failed=[e["valueString"] for e in exts if e.get("url") == MATCH_FAILED],
                     address=_address(location), languages=", ".join(x for x in langs if x),
                     modalities=", ".join(x for x in modes if x))

    return MatchResult([build(s) for s in shown], [build(s) for s in misses], criteria,
                       int(bundle.get("total") or len(shown)))


def _address(location: dict | None) -> str:
    if not location:
        return ""
    address = location.get("address") or {}
    parts = [*(address.get("line") or []), address.get("city"), address.get("state")]
    text = ", ".join(p for p in parts if p)
    return f"{location.get('name')}: {text}" if location.get("name") and text else (
        text or location.get("name") or "")
