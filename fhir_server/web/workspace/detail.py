"""One referral as its receiving organization sees it: patient (contact details when the
patient consented), reason, priority, requesting clinic and clinician, screening summary when
consent allows, earlier referrals of this patient to us, and the timeline in words.

What the access policy hides stays hidden: screening responses the policy withholds (no
active consent) are simply not there. An open referral (offered to several providers) is
shown without the patient's name, contact details and screening until the organization
accepts it (the page shows less than the policy would allow: what a provider needs to decide
is the service, the priority and the reason).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlencode

from fhir_server.web import words
from fhir_server.web.api import ApiError, FhirApi, entries
from fhir_server.web.clinician.summary import INSTRUMENTS, Answers, latest_answers
from fhir_server.web.names import Names
from fhir_server.web.timeline import (
    Event,
    events_in_words,
    outcome_words,
    timeline_parts,
    want_names,
)
from fhir_server.web.workspace.queue import REFERRAL_CODE, Us
from fhir_server.web.workspace.rows import WorkRow, work_rows
from fhir_server.workflow.open_referral import candidates, declined
from fhir_server.workflow.stalled import StalledPolicy
from mappers.screening import score_codes
from mappers.screening_instruments import SELF_HARM_ITEM


@dataclass
class Screening:
    """One screening the referral carries, scored from its answers."""

    title: str
    authored: str
    total: int | None
    maximum: int
    band: str
    answers: Answers | None
    self_harm: str = ""  # PHQ-9 item 9 answered above "Not at all": the answer in words


@dataclass
class Detail:
    task: dict
    row: WorkRow
    request: dict  # the ServiceRequest ({} when not visible)
    patient: dict  # {} when not visible (an open referral before it is accepted)
    consent: bool  # an active Consent travels with the referral
    screenings: list[Screening]
    withheld: int  # supporting items the policy does not show us
    earlier: list[WorkRow]
    events: list[Event]
    outcome: list[dict]
    candidates: list[str] = field(default_factory=list)  # names, for an open referral
    declined: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)

    @property
    def version(self) -> str:
        return str((self.task.get("meta") or {}).get("versionId") or "")

    @property
    def notes(self) -> list[str]:
        return [n["text"] for n in self.request.get("note") or [] if n.get("text")]

    @property
    def age(self) -> int | None:
        return words.age_on(self.patient.get("birthDate"))

    @property
    def contacts(self) -> list[str]:
        """Phone numbers, e-mail addresses and home address, in words."""
        out = [f"{t.get('system', 'contact')}: {t['value']}"
               for t in self.patient.get("telecom") or [] if t.get("value")]
        for address in self.patient.get("address") or []:
            parts = [*(address.get("line") or []), address.get("city"), address.get("state"),
                     address.get("postalCode")]
            text = ", ".join(p for p in parts if p)
            if text:
                out.append(f"address: {text}")
        return out


def load_detail(api: FhirApi, names: Names, us: Us, task_id: str,
                policy: StalledPolicy) -> Detail:
    """Read the referral and what it points at (batch requests); 404 raises ApiError."""
    task = api.read(f"Task/{task_id}")
    parts = timeline_parts(api.operation(f"Task/{task_id}/$timeline"))
    patient_ref = (task.get("for") or {}).get("reference") or ""
    focus = (task.get("focus") or {}).get("reference") or ""
    urls = [focus, patient_ref]
    if patient_ref.startswith("Patient/"):
        urls.append("Task?" + urlencode({"patient": patient_ref, "code": REFERRAL_CODE,
                                         "owner": us.owner_param, "_sort": "-authored-on",
                                         "_count": "20"}))
    answers = api.batch([u for u in urls if u])
    request, patient = (_resource(a) for a in answers[:2])
    earlier_tasks = [t for t in entries(_resource(answers[2]) if len(answers) > 2 else {})
                     if t.get("id") != task.get("id")]
    support = [s.get("reference") for s in (request.get("supportingInfo") or []) +
               (request.get("reasonReference") or []) if isinstance(s, dict)]
    support = [s for s in support if isinstance(s, str) and "/" in s]
    supporting = dict(zip(support, api.batch(support), strict=True)) if support else {}
    names.know(task)
    names.know(patient or None)
    outputs = [o.get("valueReference") for o in task.get("output") or []
               if isinstance(o.get("valueReference"), dict)]
    for ref in outputs + candidates(task) + [r for r, _ in declined(task)]:
        names.want(ref)
    want_names(names, parts)
    rows = work_rows(names, [task, *earlier_tasks], policy)  # fetches every name wanted
    consent = any(isinstance(v, dict) and v.get("resourceType") == "Consent"
                  and v.get("status") == "active" for v in supporting.values())
    visible = [v for v in supporting.values() if isinstance(v, dict)]
    return Detail(
        task=task, row=rows[0], request=request, patient=patient, consent=consent,
        screenings=screenings([v for v in visible
                               if v.get("resourceType") == "QuestionnaireResponse"]),
        withheld=sum(1 for ref, v in supporting.items() if isinstance(v, ApiError)
                     and not ref.startswith("Consent/")),
        earlier=rows[1:], events=events_in_words(names, parts),
        outcome=outcome_words(names, outputs),
        candidates=[names.name(ref, ref) for ref in candidates(task)],
        declined=[(names.name(ref, ref), text) for ref, text in declined(task)])


def _resource(answer: object) -> dict:
    return answer if isinstance(answer, dict) else {}


def screenings(responses: list[dict]) -> list[Screening]:
    """Each PHQ-9 / GAD-7 response the referral carries, with its total and band."""
    answers = {a.response: a for a in latest_answers(responses)}
    out = []
    for response in sorted(responses, key=lambda r: r.get("authored") or "", reverse=True):
        canonical = (response.get("questionnaire") or "").split("|")[0]
        instrument = next((i for i in INSTRUMENTS if i.canonical == canonical), None)
        if instrument is None:
            continue
        codes, shown = {}, {}
        for item in response.get("item") or []:
            coding = ((item.get("answer") or [{}])[0]).get("valueCoding") or {}
            if coding.get("code"):
                link = (item.get("linkId") or "").lstrip("/")
                codes[link] = coding["code"]
                shown[link] = coding.get("display") or coding["code"]
        try:
            total, band, scores = score_codes(instrument, codes)
        except KeyError:
            total, band, scores = None, None, {}
        out.append(Screening(
            title=instrument.title, authored=response.get("authored") or "", total=total,
            maximum=instrument.max_total, band=band.display if band else "not scored",
            answers=answers.get(f"QuestionnaireResponse/{response.get('id')}"),
            self_harm=shown.get(SELF_HARM_ITEM, "") if scores.get(SELF_HARM_ITEM) else ""))
    return out
