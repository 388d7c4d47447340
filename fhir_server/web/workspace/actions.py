"""What the workspace's buttons write (pure: the current Task in, the next version or the
transaction entries out). Every action goes through the server's referral rules
(fhir_server/workflow/RULES.md): the workspace only builds the request, sends it with the
page's version in `If-Match`, and shows the server's answer next to the action.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from fhir_server.web.forms import FieldMap, key_condition, key_identifier
from fhir_server.workflow.artifacts import status_reasons
from fhir_server.workflow.canonical import (
    EXT_CANDIDATE,
    EXT_CANDIDATE_DECLINED,
    SDOHCC_CODES,
    STATUS_REASON_SYSTEM,
)

SNOMED = "http://snomed.info/sct"
PROCEDURE_PROFILE = ("http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/"
                     "SDOHCC-Procedure")
MAX_TEXT = 1000

#: The outcome a provider records when it completes a referral: SNOMED CT procedures for
#: behavioral-health services (a short list; codes need terminology sign-off before use).
OUTCOMES: tuple[tuple[str, str], ...] = (
    ("409063005", "Counseling"),
    ("75516001", "Psychotherapy"),
    ("228557008", "Cognitive and behavioral therapy"),
    ("76168009", "Group psychotherapy"),
    ("24642003", "Psychiatry procedure or service"),
    ("225337009", "Suicide risk assessment"),
    ("410606002", "Social service procedure"),
)


@dataclass(frozen=True)
class Action:
    """One button on a referral: which status it sets and what reason it asks for."""

    name: str
    label: str  # the button
    status: str  # the Task status it sets
    reason: str  # "coded" (a reason from the list + text), "text" or "" (none)
    after: tuple[str, ...]  # the statuses it is offered in
    help: str = ""

    @property
    def reasons(self) -> list[tuple[str, str]]:
        return status_reasons(self.status) if self.reason == "coded" else []

    @property
    def fields(self) -> FieldMap:
        """Where the server's issues about this action belong."""
        return FieldMap(((r"statusReason|extension", f"{self.name}_text"),
                         (r"Procedure\.code", "complete_code"),
                         (r"Procedure\.performed", "complete_date"),
                         (r"Procedure\.note", "complete_note"),
                         (r"target", "redirect_service"),
                         (r"reason", "redirect_reason")))


ACTIONS: dict[str, Action] = {a.name: a for a in (
    Action("accept", "Accept", "accepted", "", ("requested",),
           "You will see the patient's details and take on the referral."),
    Action("reject", "Decline", "rejected", "coded", ("requested",),
           "The referring clinic sees your reason and can refer elsewhere."),
    Action("start", "Start care", "in-progress", "", ("accepted",),
           "The patient had a first contact or appointment."),
    Action("hold", "Put on hold", "on-hold", "coded", ("accepted", "in-progress"),
           "Pause the referral; the clinic sees why."),
    Action("resume", "Resume", "in-progress", "text", ("on-hold",),
           "Care goes on; say what changed."),
    Action("complete", "Complete", "completed", "", ("accepted", "in-progress", "on-hold"),
           "Record what was done; the clinic sees the outcome."),
    Action("fail", "Could not complete", "failed", "coded",
           ("accepted", "in-progress", "on-hold"),
           "Close the referral without the service; the clinic sees why."),
    Action("claim", "Accept this referral", "accepted", "", ("requested",),
           "Your organization becomes the provider; the other candidates see it withdrawn."),
    Action("decline", "Decline", "rejected", "coded", ("requested",),
           "Your organization is removed from the candidates; the others can still accept."),
)}
OWNER_ACTIONS = ("accept", "reject", "start", "hold", "resume", "complete", "fail")
OFFER_ACTIONS = ("claim", "decline")


def offered(status: str, names: tuple[str, ...] = OWNER_ACTIONS) -> list[Action]:
    """The actions a referral in `status` offers."""
    return [ACTIONS[n] for n in names if status in ACTIONS[n].after]


def reason_of(action: Action, code: str, text: str) -> dict | None:
    """The Task.statusReason an action writes (None: no reason)."""
    if not action.reason or not text.strip():
        return None  # no reason: the server's rules say what is missing
    concept: dict = {"text": text}
    display = dict(action.reasons).get(code)
    if action.reason == "coded" and display:
        concept["coding"] = [{"system": STATUS_REASON_SYSTEM, "code": code,
                              "display": display}]
    return concept


def moved(task: dict, action: Action, code: str = "", text: str = "") -> dict:
    """The Task after an owner action that only changes its status (and reason)."""
    new = copy.deepcopy(task)
    new["status"] = action.status
    reason = reason_of(action, code, text)
    if not reason:
        new.pop("statusReason", None)
    else:
        new["statusReason"] = reason
    return new


def claimed(task: dict, organization: str) -> dict:
    """An open referral claimed by `organization`: it becomes the owner and accepts."""
    new = copy.deepcopy(task)
    new.update(status="accepted", owner={"reference": organization})
    return new


def declined_offer(task: dict, ours: list[str], organization: str, code: str,
                   text: str) -> dict:
    """An open referral after `organization` declined it: its candidate entries (any of
    `ours`) removed, one declined entry added with the reason."""
    new = copy.deepcopy(task)
    keep = [e for e in new.get("extension") or []
            if not (e.get("url") == EXT_CANDIDATE
                    and (e.get("valueReference") or {}).get("reference") in ours)]
    concept = reason_of(ACTIONS["decline"], code, text) or {"coding": [
        {"system": STATUS_REASON_SYSTEM, "code": code or "other"}]}
    keep.append({"url": EXT_CANDIDATE_DECLINED, "extension": [
        {"url": "candidate", "valueReference": {"reference": organization}},
        {"url": "reason", "valueCodeableConcept": concept}]})
    new["extension"] = keep
    return new


def completion_entries(task: dict, version: str, key: str, organization: str,
                       code: str, day: str, note: str) -> list[dict]:
    """One transaction: the outcome Procedure (created once per form key) and the Task
    completed with it as its resulting activity (only if the Task is still `version`)."""
    display = dict(OUTCOMES).get(code, code)
    procedure: dict = {
        "resourceType": "Procedure", "meta": {"profile": [PROCEDURE_PROFILE]},
        "identifier": [key_identifier(key)], "status": "completed",
        "code": {"coding": [{"system": SNOMED, "code": code, "display": display}],
                 "text": display},
        "subject": task.get("for"), "basedOn": [task.get("focus")],
        "performedDateTime": day, "performer": [{"actor": {"reference": organization}}]}
    if note:
        procedure["note"] = [{"text": note}]
    urn = f"urn:uuid:{key}"
    new = moved(task, ACTIONS["complete"])
    outputs = [o for o in new.get("output") or []]
    outputs.append({"type": {"coding": [{"system": SDOHCC_CODES,
                                         "code": "resulting-activity"}]},
                    "valueReference": {"reference": urn}})
    new["output"] = outputs
    return [
        {"fullUrl": urn, "resource": procedure,
         "request": {"method": "POST", "url": "Procedure", "ifNoneExist": key_condition(key)}},
        {"resource": new,
         "request": {"method": "PUT", "url": f"Task/{task['id']}",
                     "ifMatch": f'W/"{version}"'}},
    ]


def redirect_parameters(target: str, reason: str) -> dict:
    """The `$redirect` Parameters: the provider chosen and why."""
    return {"resourceType": "Parameters", "parameter": [
        {"name": "target", "valueReference": {"reference": target}},
        {"name": "reason", "valueString": reason}]}
