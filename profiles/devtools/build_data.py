"""Developer tool: build the compact base-R4 element data and the shipped terminology.

Called by ``profiles.devtools.fsh_convert``; reads ../shared at development time only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from profiles.devtools.fsh_convert import FHIR_SD, REPO, SDOH, SHARED, USCORE, write_gz

R4 = SHARED / "fhir-r4"
DERIVED = SHARED / "gravity" / "derived-from-fsh"
# Base invariants that are generic (checked everywhere by the base validator) or best practice.
SKIP_CONSTRAINTS = {"ele-1", "ext-1", "dom-2", "dom-3", "dom-4", "dom-5", "dom-6"}

# Profile URLs we reference but do not ship, with their resource type (for reference checks).
EXTERNAL_PROFILE_TYPES = {
    f"{USCORE}/StructureDefinition/us-core-encounter": "Encounter",
    f"{USCORE}/StructureDefinition/us-core-questionnaireresponse": "QuestionnaireResponse",
    f"{USCORE}/StructureDefinition/us-core-relatedperson": "RelatedPerson",
    f"{USCORE}/StructureDefinition/us-core-careplan": "CarePlan",
    f"{FHIR_SD}condition-assertedDate": "Extension",
    f"{FHIR_SD}resource-pertainsToGoal": "Extension",
}

UC_CAT = "http://hl7.org/fhir/us/core/CodeSystem/us-core-category"
OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"
UC_CATEGORY_CODES = ["sdoh", "functional-status", "disability-status", "cognitive-status",
                     "treatment-intervention-preference", "care-experience-preference",
                     "observation-adi-documentation"]

# Hand-written US Core 7.0.0 / backport value sets (compose only; large external code systems
# are included by system, with the IG's filters kept so membership is "unknown" inside them).
EXTRA_VALUESETS: list[dict[str, Any]] = [
    {"id": "us-core-procedure-code", "url": f"{USCORE}/ValueSet/us-core-procedure-code",
     "version": "7.0.0", "name": "USCoreProcedureCodes",
     "compose": {"include": [
         {"system": "http://snomed.info/sct",
          "filter": [{"property": "concept", "op": "is-a", "value": "71388002"}]},
         {"system": "http://www.ama-assn.org/go/cpt"},
         {"system": "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"},
         {"system": "http://www.cms.gov/Medicare/Coding/ICD10"},
         {"system": "http://ada.org/cdt"},
         {"system": "http://loinc.org"}]}},
    {"id": "us-core-condition-code", "url": f"{USCORE}/ValueSet/us-core-condition-code",
     "version": "7.0.0", "name": "USCoreConditionCodes",
     "compose": {"include": [
         {"system": "http://snomed.info/sct",
          "filter": [{"property": "concept", "op": "is-a", "value": "404684003"}]},
         {"system": "http://snomed.info/sct",
          "filter": [{"property": "concept", "op": "is-a", "value": "243796009"}]},
         {"system": "http://snomed.info/sct",
          "filter": [{"property": "concept", "op": "is-a", "value": "272379006"}]},
         {"system": "http://hl7.org/fhir/sid/icd-10-cm"},
         {"system": "http://hl7.org/fhir/sid/icd-9-cm"}]}},
    {"id": "us-core-survey-codes", "url": f"{USCORE}/ValueSet/us-core-survey-codes",
     "version": "7.0.0", "name": "USCoreSurveyCodes",
     "compose": {"include": [{"system": "http://loinc.org",
                              "filter": [{"property": "CLASSTYPE", "op": "=", "value": "4"}]}]}},
    {"id": "us-core-goal-description", "url": f"{USCORE}/ValueSet/us-core-goal-description",
     "version": "7.0.0", "name": "USCoreGoalCodes",
     "compose": {"include": [
         {"system": "http://snomed.info/sct",
          "filter": [{"property": "concept", "op": "is-a", "value": "404684003"}]},
         {"system": "http://loinc.org"}]}},
    {"id": "us-core-problem-or-health-concern",
     "url": f"{USCORE}/ValueSet/us-core-problem-or-health-concern", "version": "7.0.0",
     "name": "USCoreProblemOrHealthConcern",
     "compose": {"include": [
         {"system": "http://terminology.hl7.org/CodeSystem/condition-category",
          "concept": [{"code": "problem-list-item"}]},
         {"system": "http://hl7.org/fhir/us/core/CodeSystem/condition-category",
          "concept": [{"code": "health-concern"}]}]}},
    {"id": "us-core-screening-assessment-condition-category",
     "url": f"{USCORE}/ValueSet/us-core-screening-assessment-condition-category",
     "version": "7.0.0", "name": "USCoreScreeningAssessmentConditionCategory",
     "compose": {"include": [{"system": UC_CAT,
                              "concept": [{"code": c} for c in UC_CATEGORY_CODES]}]}},
    {"id": "us-core-screening-assessment-observation-category",
     "url": f"{USCORE}/ValueSet/us-core-screening-assessment-observation-category",
     "version": "7.0.0", "name": "USCoreScreeningAssessmentObservationCategory",
     "compose": {"include": [{"system": UC_CAT,
                              "concept": [{"code": c} for c in UC_CATEGORY_CODES]}]}},
    {"id": "us-core-simple-observation-category",
     "url": f"{USCORE}/ValueSet/us-core-simple-observation-category", "version": "7.0.0",
     "name": "USCoreSimpleObservationCategory",
     "compose": {"include": [
         {"system": UC_CAT, "concept": [{"code": c} for c in UC_CATEGORY_CODES]},
         {"system": OBS_CAT, "concept": [{"code": c} for c in (
             "social-history", "vital-signs", "imaging", "laboratory", "procedure", "survey",
             "exam", "therapy", "activity")]}]}},
    # The two DocumentReference value sets of US Core 7.0.0 (HL7/US-Core input/resources).
    {"id": "us-core-documentreference-type",
     "url": f"{USCORE}/ValueSet/us-core-documentreference-type", "version": "7.0.0",
     "name": "USCoreDocumentReferenceType",
     "compose": {"include": [
         {"system": "http://terminology.hl7.org/CodeSystem/v3-NullFlavor",
          "concept": [{"code": "UNK", "display": "unknown"}]},
         {"system": "http://loinc.org",
          "filter": [{"property": "SCALE_TYP", "op": "=", "value": "DOC"}]}]}},
    {"id": "us-core-documentreference-category",
     "url": f"{USCORE}/ValueSet/us-core-documentreference-category", "version": "7.0.0",
     "name": "USCoreDocumentReferenceCategory",
     "compose": {"include": [{
         "system": f"{USCORE}/CodeSystem/us-core-documentreference-category",
         "concept": [{"code": "clinical-note", "display": "Clinical Note"}]}]}},
    {"id": "backport-content-value-set",
     "url": "http://hl7.org/fhir/uv/subscriptions-backport/ValueSet/backport-content-value-set",
     "version": "1.1.0", "name": "BackportContentValueSet",
     "compose": {"include": [{
         "system": "http://hl7.org/fhir/uv/subscriptions-backport/CodeSystem/"
                   "backport-content-code-system",
         "concept": [{"code": c} for c in ("empty", "id-only", "full-resource")]}]}},
]


def _entries(path: Path) -> list[dict[str, Any]]:
    return [e["resource"] for e in json.loads(path.read_text("utf-8"))["entry"]]


def _type_codes(el: dict[str, Any]) -> list[str]:
    out = []
    for t in el.get("type") or []:
        code = t.get("code", "")
        if code.startswith("http://hl7.org/fhirpath/System."):
            code = "System." + code.rsplit(".", 1)[1]
        out.append(code)
    return out


def build_base(sds: list[dict[str, Any]], out: Path) -> None:
    """Write profiles/base/r4-elements.json.gz: element table of every R4 type + resource."""
    profiled = {sd["type"] for sd in sds}
    table: dict[str, dict[str, Any]] = {}
    constraints: dict[str, list[dict[str, str]]] = {}
    bindings: dict[str, dict[str, str]] = {}
    for res in _entries(R4 / "profiles-types.json") + _entries(R4 / "profiles-resources.json"):
        if res.get("resourceType") != "StructureDefinition" or \
                res.get("derivation") == "constraint":
            continue
        name = res["id"]
        elems: dict[str, Any] = {}
        for el in res.get("snapshot", {}).get("element", []):
            row: dict[str, Any] = {"n": el.get("min", 0), "x": el.get("max", "*"),
                                   "t": _type_codes(el)}
            targets = sorted({tp.rsplit("/", 1)[-1] for t in el.get("type") or []
                              if t.get("code") == "Reference"
                              for tp in t.get("targetProfile", [])})
            if targets:
                row["p"] = targets
            if el.get("contentReference"):
                row["r"] = el["contentReference"].lstrip("#")
            elems[el["path"]] = row
            if name in profiled:
                b = el.get("binding") or {}
                if b.get("strength") == "required" and b.get("valueSet"):
                    bindings[el["path"]] = {"strength": "required", "valueSet": b["valueSet"]}
                for c in el.get("constraint", []):
                    if c["key"] in SKIP_CONSTRAINTS or not c.get("expression"):
                        continue
                    if any(x.get("url", "").endswith("best-practice") for x in
                           c.get("extension", [])):
                        continue
                    constraints.setdefault(name, []).append({
                        "key": c["key"], "severity": c["severity"], "human": c["human"],
                        "expression": c["expression"], "path": el["path"]})
        table[name] = elems
    out.mkdir(parents=True, exist_ok=True)
    write_gz(out / "r4-elements.json.gz", {"elements": table, "constraints": constraints,
                                           "bindings": bindings})
    (out / "external-profile-types.json").write_text(
        json.dumps(EXTERNAL_PROFILE_TYPES, indent=1, sort_keys=True) + "\n", "utf-8")


def _referenced_valuesets(sds: list[dict[str, Any]], base_bindings: list[str]) -> set[str]:
    urls = set(base_bindings)
    for sd in sds:
        for el in sd["differential"]["element"]:
            if "binding" in el:
                urls.add(el["binding"]["valueSet"])
    urls.add(f"{USCORE}/ValueSet/us-core-problem-or-health-concern")  # memberOf in SDOH-Con-2
    return urls


def build_terminology(sds: list[dict[str, Any]], out: Path) -> None:
    """Write the ValueSets/CodeSystems needed to check our bindings offline."""
    import gzip

    with gzip.open(REPO / "profiles" / "base" / "r4-elements.json.gz") as fh:
        base = json.load(fh)
    wanted = _referenced_valuesets(sds, [b["valueSet"] for b in base["bindings"].values()])
    core = {r["url"]: r for r in _entries(R4 / "valuesets.json")}
    derived = {}
    for f in DERIVED.glob("*.json"):
        r = json.loads(f.read_text("utf-8"))
        if r["resourceType"] in ("ValueSet", "CodeSystem"):
            derived[r["url"]] = r
    extra = {v["url"]: {"resourceType": "ValueSet", "status": "active", **v}
             for v in EXTRA_VALUESETS}
    pool = {**core, **derived, **extra}
    shipped: dict[str, dict[str, Any]] = {}
    todo = [u.partition("|")[0] for u in wanted]
    while todo:
        url = todo.pop()
        if url in shipped or url not in pool:
            continue
        res = pool[url]
        shipped[url] = res
        for inc in res.get("compose", {}).get("include", []) + res.get("compose", {}).get(
                "exclude", []):
            todo.extend(v.partition("|")[0] for v in inc.get("valueSet", []))
            if inc.get("system") and not inc.get("concept"):
                todo.append(inc["system"])  # code system (shipped when we have it)
    cs_by_url = {r["url"]: r for r in pool.values() if r["resourceType"] == "CodeSystem"}
    cs_by_url.update({r.get("valueSet"): r for r in cs_by_url.values() if r.get("valueSet")})
    # code systems referenced by system-only includes
    for res in list(shipped.values()):
        for inc in res.get("compose", {}).get("include", []):
            sysurl = inc.get("system")
            if sysurl and sysurl in cs_by_url and cs_by_url[sysurl]["resourceType"] == "CodeSystem":
                shipped[sysurl] = cs_by_url[sysurl]
    sdoh_cs = f"{SDOH}/CodeSystem/SDOHCC-CodeSystemTemporaryCodes"
    shipped[sdoh_cs] = derived[sdoh_cs]
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.json"):
        old.unlink()
    for res in shipped.values():
        slim = {k: v for k, v in res.items() if k not in ("text", "extension", "contact",
                                                           "jurisdiction", "meta")}
        name = f"{slim['resourceType']}-{slim['id']}.json"
        (out / name).write_text(json.dumps(no_empty_strings(slim), indent=1) + "\n", "utf-8")
    print(f"wrote {len(shipped)} ValueSets/CodeSystems; missing:",
          sorted(u.partition('|')[0] for u in wanted if u.partition('|')[0] not in shipped))


def no_empty_strings(node: Any) -> Any:
    """A copy of `node` without empty-string values (FHIR forbids them)."""
    if isinstance(node, dict):
        return {k: no_empty_strings(v) for k, v in node.items() if v != ""}
    if isinstance(node, list):
        return [no_empty_strings(v) for v in node if v != ""]
    return node
