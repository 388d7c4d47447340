"""An independent statement of the organization access policy (fhir_server/auth/README.md),
written from the documented rules and not from the product's rule tables: the oracle of
the policy tests and of the property test.

A world is a list of `(resource, author_org)` pairs: the resource as stored and the
organization that wrote it (None for the server itself).
"""

from __future__ import annotations

DIRECTORY = {"Organization", "Practitioner", "PractitionerRole", "HealthcareService",
             "Location", "Endpoint", "Questionnaire", "ValueSet", "CodeSystem",
             "StructureDefinition", "SearchParameter", "CapabilityStatement",
             "OperationDefinition", "ActivityDefinition", "PlanDefinition", "Library",
             "Measure"}
CLINICAL = {"QuestionnaireResponse", "Observation", "Condition", "Goal", "DocumentReference"}
CANDIDATE = "http://mh-referral.example.org/fhir/StructureDefinition/task-candidate"

World = list[tuple[dict, str | None]]


def key(resource: dict) -> str:
    return f"{resource['resourceType']}/{resource['id']}"


def refs(value: object) -> list[str]:
    """Every `Type/id` reference anywhere inside `value` (a dict, list or scalar)."""
    out: list[str] = []
    if isinstance(value, dict):
        ref = value.get("reference")
        if isinstance(ref, str) and "/" in ref and not ref.startswith("#"):
            out.append("/".join(ref.split("/_history/")[0].split("/")[-2:]))
        for item in value.values():
            out.extend(refs(item))
    elif isinstance(value, list):
        for item in value:
            out.extend(refs(item))
    return out


def _at(resource: dict, *path: str) -> list[str]:
    """References at a dotted path (lists flattened, choice `value[x]` as `value*`)."""
    items: list = [resource]
    for step in path:
        nxt: list = []
        for item in items:
            if not isinstance(item, dict):
                continue
            if step.endswith("*"):
                values = [v for k, v in item.items() if k.startswith(step[:-1])]
            else:
                values = [item.get(step)]
            for value in values:
                nxt.extend(value if isinstance(value, list) else [value])
        items = [i for i in nxt if i is not None]
    return [r for item in items for r in refs(item)]


def org_refs(org: str, world: World) -> set[str]:
    """The organization plus its PractitionerRoles and HealthcareServices."""
    mine = {org}
    for res, _ in world:
        if res["resourceType"] == "PractitionerRole" and org in _at(res, "organization"):
            mine.add(key(res))
        if res["resourceType"] == "HealthcareService" and org in _at(res, "providedBy"):
            mine.add(key(res))
    return mine


def visible(org: str, world: World) -> set[str]:
    """The keys of the resources in `world` that staff of `org` may read."""
    by_key = {key(r): (r, a) for r, a in world}
    mine = org_refs(org, world)
    seen = {k for k, (r, a) in by_key.items()
            if r["resourceType"] in DIRECTORY or (a == org and r["resourceType"] != "AuditEvent")}
    # Patients of the organization
    for k, (res, _) in by_key.items():
        if res["resourceType"] == "Patient" and org in _at(res, "managingOrganization"):
            seen.add(k)
    for res, author in world:
        if author == org:
            seen.update(r for r in refs(res) if r.startswith("Patient/"))
    # The referral compartment
    tasks = [r for r, _ in world if r["resourceType"] == "Task"
             and ((set(_at(r, "owner")) | set(_at(r, "requester"))) & mine
                  or _offered_to(r, mine))]
    seen.update(key(t) for t in tasks)
    task_keys = {key(t) for t in tasks} | {k for k in seen if k.startswith("Task/")}
    focus = {f for t in task_keys if t in by_key for f in _at(by_key[t][0], "focus")}
    requests = [r for r, _ in world if r["resourceType"] == "ServiceRequest"
                and (key(r) in focus or key(r) in seen
                     or (set(_at(r, "requester")) | set(_at(r, "performer"))) & mine)]
    seen.update(key(s) for s in requests)
    for t in task_keys:
        if t in by_key:
            task = by_key[t][0]
            seen.update(r for r in _at(task, "for") if r.startswith("Patient/"))
            seen.update(r for r in _at(task, "focus") if r.startswith("Flag/"))
            seen.update(r for r in _at(task, "output", "value*")
                        if r.startswith(("Procedure/", "QuestionnaireResponse/")))
    for sr in requests:
        seen.update(r for r in _at(sr, "subject") if r.startswith("Patient/"))
        support = _at(sr, "supportingInfo")
        seen.update(r for r in support if r.startswith("Consent/"))
        sr_author = by_key[key(sr)][1]
        consented = any(
            c in by_key and by_key[c][0].get("status") == "active" and by_key[c][1] == sr_author
            for c in support if c.startswith("Consent/"))
        if consented:
            clinical = support + _at(sr, "reasonReference")
            seen.update(r for r in clinical if r.split("/")[0] in CLINICAL)
            seen.update(r for r in _at(sr, "encounter") if r.startswith("Encounter/"))
    for res, _ in world:
        if res["resourceType"] == "Procedure" and set(_at(res, "performer", "actor")) & mine:
            seen.add(key(res))
    # Scores of visible answers: Observations derived from a visible QuestionnaireResponse
    answers = {k for k in seen if k.startswith("QuestionnaireResponse/") and k in by_key}
    for res, _ in world:
        if res["resourceType"] == "Observation" and set(_at(res, "derivedFrom")) & answers:
            seen.add(key(res))
    return {k for k in seen if k in by_key}



def _offered_to(task: dict, mine: set[str]) -> bool:
    """An open referral (requested, no owner yet) lists one of `mine` as a candidate (our
    task-candidate extension): its candidates see it as an owner would until it is claimed."""
    candidates = [r for ext in task.get("extension") or [] if ext.get("url") == CANDIDATE
                  for r in refs(ext.get("valueReference"))]
    return task.get("status") == "requested" and not task.get("owner") \
        and bool(set(candidates) & mine)
