"""The patient's referrals in plain words: who has the referral, what its status means for
the patient ("Riverside Counseling accepted your referral on 3 December. They will call
you."), what to do next, and how to reach the provider and the care team that referred.

Everything is read through the API with the patient's token, in three round trips whatever
the number of referrals: one batch (referral Tasks with their ServiceRequests and owners,
the patient's own Tasks), one batch of every referral's `$timeline` (the day its status
began), one batch of the names and contact details they point at.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlencode

from flask_babel import gettext as _

from fhir_server.web.api import ApiError, FhirApi, entries, operation_parts
from fhir_server.web.i18n import long_day
from fhir_server.web.names import Names
from fhir_server.web.patient.tasks import PatientTask, patient_task
from fhir_server.web.words import display_name
from fhir_server.workflow.canonical import EXT_REDIRECTED_TO, TASK_CODE_SYSTEM

REFERRAL_CODE = f"{TASK_CODE_SYSTEM}|fulfill"
MAX_REFERRALS = 50
MAX_TASKS = 100
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass
class Contact:
    """How to reach an organization or service."""

    name: str = ""
    phones: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)  # numbers that take text messages
    emails: list[str] = field(default_factory=list)
    websites: list[str] = field(default_factory=list)
    address: list[str] = field(default_factory=list)  # lines, then "City, ST 00000"
    hours: str = ""

    @property
    def empty(self) -> bool:
        return not (self.phones or self.emails or self.websites or self.address)

    @property
    def map_query(self) -> str:
        return urlencode({"q": ", ".join(self.address)}) if self.address else ""


@dataclass
class ReferralCard:
    """One referral as the patient sees it."""

    id: str
    status: str
    provider: str  # the service or organization that has it ('' while none has)
    sentence: str  # what happened
    next_step: str  # what to do now
    since: str  # the day the status began (ISO), for sorting
    contact: Contact
    care_team: Contact
    badge: str
    open: bool


def contact_of(resource: dict | None, location: dict | None = None) -> Contact:
    """Phones, e-mail, website, address and hours of an Organization, HealthcareService or
    PractitionerRole (the address from `location` when given)."""
    resource = resource or {}
    contact = Contact(name=display_name(resource) if resource else "")
    for point in resource.get("telecom") or []:
        value = str(point.get("value") or "").strip()
        if not value:
            continue
        system = point.get("system")
        if system == "phone":
            contact.phones.append(value)
        elif system == "sms":
            contact.texts.append(value)
        elif system == "email":
            contact.emails.append(value)
        elif system == "url" and value.startswith(("https://", "http://")):
            contact.websites.append(value)
    address = (location or {}).get("address") or next(
        iter(resource.get("address") or []), None)
    if isinstance(address, dict):
        contact.address = address_lines(address)
    contact.hours = hours_words(resource.get("availableTime") or [])
    return contact


def address_lines(address: dict) -> list[str]:
    """An Address as the lines people write on an envelope."""
    if address.get("text") and not address.get("line"):
        return [str(address["text"])]
    lines = [str(x) for x in address.get("line") or [] if x]
    city = ", ".join(x for x in (address.get("city"), " ".join(
        x for x in (address.get("state"), address.get("postalCode")) if x)) if x)
    if city:
        lines.append(city)
    return lines


def hours_words(available: list[dict]) -> str:
    """`Open 24 hours, every day`, or `Mon–Fri 09:00–17:00` style lines joined."""
    parts = []
    for slot in available:
        days = [d for d in DAYS if d in (slot.get("daysOfWeek") or [])]
        if slot.get("allDay") and len(days) == 7:
            return _("Open 24 hours, every day")
        names = {"mon": _("Mon"), "tue": _("Tue"), "wed": _("Wed"), "thu": _("Thu"),
                 "fri": _("Fri"), "sat": _("Sat"), "sun": _("Sun")}
        when = ", ".join(names[d] for d in days)
        if slot.get("allDay"):
            parts.append(_("%(days)s: all day", days=when))
        elif slot.get("availableStartTime") and slot.get("availableEndTime"):
            parts.append(_("%(days)s: %(start)s to %(end)s", days=when,
                           start=str(slot["availableStartTime"])[:5],
                           end=str(slot["availableEndTime"])[:5]))
    return "; ".join(parts)


def status_words(status: str, provider: str, day: str, care_team: str, provider_phone: str,
                 team_phone: str) -> tuple[str, str]:
    """(what happened, what to do next) in plain words."""
    provider = provider or _("the provider")
    care_team = care_team or _("your care team")
    on = long_day(day) if day else ""
    call_provider = _("Call %(provider)s at %(phone)s.", provider=provider,
                      phone=provider_phone) if provider_phone else ""
    call_team = _("Call %(team)s at %(phone)s.", team=care_team, phone=team_phone) \
        if team_phone else _("Talk to %(team)s.", team=care_team)
    if status in ("requested", "received", "draft", "ready"):
        sentence = _("We sent your referral to %(provider)s on %(day)s. They have not answered "
                     "yet.", provider=provider, day=on) if on else _(
            "We sent your referral to %(provider)s. They have not answered yet.",
            provider=provider)
        return sentence, _("You do not need to do anything now. We will tell you when they "
                           "answer.")
    if status == "accepted":
        sentence = _("%(provider)s accepted your referral on %(day)s. They will call you.",
                     provider=provider, day=on) if on else _(
            "%(provider)s accepted your referral. They will call you.", provider=provider)
        wait = _("If they have not called you within 3 days, call them.")
        return sentence, " ".join(x for x in (wait, call_provider) if x)
    if status == "in-progress":
        sentence = _("Your care with %(provider)s started on %(day)s.", provider=provider,
                     day=on) if on else _("Your care with %(provider)s has started.",
                                          provider=provider)
        return sentence, " ".join(x for x in (_("Keep going to your visits. If you need to "
                                                 "change a visit, call them."),
                                               call_provider) if x)
    if status == "on-hold":
        return _("Your referral to %(provider)s is on hold.", provider=provider), \
            " ".join(x for x in (call_provider or call_team,) if x)
    if status == "completed":
        sentence = _("%(provider)s finished your care on %(day)s.", provider=provider,
                     day=on) if on else _("%(provider)s finished your care.",
                                          provider=provider)
        return sentence, _("If you still need help, talk to %(team)s.", team=care_team)
    if status == "rejected":
        return _("%(provider)s cannot take your referral.", provider=provider), \
            _("%(team)s will help you find another place.", team=care_team) + " " + call_team
    if status == "failed":
        return _("%(provider)s could not give you this care.", provider=provider), call_team
    if status == "cancelled":
        return _("This referral was cancelled."), _("If you still need help, talk to "
                                                    "%(team)s.", team=care_team)
    return _("Your referral to %(provider)s: status %(status)s.", provider=provider,
             status=status), call_team


BADGES = {"accepted": "ok", "in-progress": "ok", "completed": "ok", "rejected": "danger",
          "failed": "danger", "on-hold": "warn"}
OPEN_STATUSES = ("draft", "requested", "received", "accepted", "ready", "in-progress",
                 "on-hold")


def redirected(task: dict) -> bool:
    """A declined referral that was sent on to another provider (that one is shown)."""
    return any(e.get("url") == EXT_REDIRECTED_TO for e in task.get("extension") or [])


def status_days(api: FhirApi, tasks: list[dict]) -> dict[str, str]:
    """The time each Task's current status began, from `$timeline` (one batch)."""
    urls = [f"Task/{t['id']}/$timeline" for t in tasks]
    out: dict[str, str] = {}
    for task, answer in zip(tasks, api.batch(urls), strict=True):
        if isinstance(answer, ApiError):
            continue
        changes = [p for p in operation_parts(answer, "event")
                   if p.get("kind") == "status" and p.get("status") == task.get("status")]
        if changes:
            out[str(task["id"])] = str(changes[-1].get("time") or "")
    return out


def first_phone(contact: Contact) -> str:
    return next(iter(contact.phones), "")


@dataclass
class MyCare:
    """What the home page shows."""

    referrals: list[ReferralCard]
    tasks: list[PatientTask]


def load_my_care(api: FhirApi, patient_ref: str) -> MyCare:
    """The patient's referrals and Tasks, with everything they name."""
    referral_search = "Task?" + urlencode([
        ("patient", patient_ref), ("code", REFERRAL_CODE), ("_include", "Task:focus"),
        ("_count", str(MAX_REFERRALS))])
    task_search = "Task?" + urlencode([("owner", patient_ref), ("_count", str(MAX_TASKS))])
    found = api.batch([referral_search, task_search])
    for answer in found:
        if isinstance(answer, ApiError):
            raise answer
    bundle, own = found
    tasks = [t for t in entries(bundle) if t.get("resourceType") == "Task"
             and not (t.get("status") == "rejected" and redirected(t))]
    requests = {f"ServiceRequest/{r['id']}": r for r in entries(bundle, "include")
                if r.get("resourceType") == "ServiceRequest"}
    days = status_days(api, tasks) if tasks else {}
    names = Names(api)
    for resource in requests.values():
        names.know(resource)
    for task in tasks:
        request = requests.get((task.get("focus") or {}).get("reference") or "") or {}
        names.want(task.get("owner"))
        names.want(task.get("requester"))
        for performer in request.get("performer") or []:
            names.want(performer)
    names.fetch()
    for resource in list(names.resources.values()):  # second hop: addresses, clinics
        for ref in (resource.get("location") or [])[:1]:
            names.want(ref)
        names.want(resource.get("organization"))
    names.fetch()
    cards = [_card(names, requests, task, days.get(str(task["id"]), "")) for task in tasks]
    cards.sort(key=lambda c: c.since, reverse=True)
    cards.sort(key=lambda c: not c.open)  # open ones first, newest first within each
    patient_tasks = [patient_task(t) for t in entries(own) if t.get("resourceType") == "Task"]
    return MyCare(referrals=cards, tasks=patient_tasks)


def _service(names: Names, request: dict, owner: str) -> dict | None:
    """The HealthcareService that has the referral (the request's performer, when it
    belongs to the Task's owner)."""
    for performer in request.get("performer") or []:
        resource = names.get(performer)
        if resource and resource.get("resourceType") == "HealthcareService":
            provided_by = (resource.get("providedBy") or {}).get("reference")
            if not owner or provided_by == owner:
                return resource
    return None


def _card(names: Names, requests: dict[str, dict], task: dict, since: str) -> ReferralCard:
    owner_ref = (task.get("owner") or {}).get("reference") or ""
    request = requests.get((task.get("focus") or {}).get("reference") or "") or {}
    service = _service(names, request, owner_ref)
    owner = names.get(owner_ref) if owner_ref else None
    location = names.get(next(iter((service or {}).get("location") or []), None))
    contact = contact_of(service or owner, location)
    if service and owner:  # the service first, the organization's numbers as well
        org = contact_of(owner)
        contact.phones += [p for p in org.phones if p not in contact.phones]
        contact.address = contact.address or org.address
        contact.websites = contact.websites or org.websites
    provider = display_name(service) if service else (names.name(owner_ref, "")
                                                      if owner_ref else "")
    if provider.startswith("("):
        provider = ""
    requester = names.get(task.get("requester")) or {}
    clinic = names.get(requester.get("organization")) if requester.get(
        "resourceType") == "PractitionerRole" else requester
    care_team = contact_of(clinic) if clinic else Contact()
    if requester.get("resourceType") == "PractitionerRole":
        role = contact_of(requester)
        care_team.phones = role.phones + [p for p in care_team.phones if p not in role.phones]
    status = str(task.get("status") or "")
    since = since or str(task.get("lastModified") or task.get("authoredOn") or "")
    sentence, next_step = status_words(status, provider, since, care_team.name,
                                       first_phone(contact), first_phone(care_team))
    return ReferralCard(
        id=str(task["id"]), status=status, provider=provider, sentence=sentence,
        next_step=next_step, since=since, contact=contact, care_team=care_team,
        badge=BADGES.get(status, "neutral"),
        open=status in OPEN_STATUSES)
