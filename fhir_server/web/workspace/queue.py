"""The queue: the referral Tasks addressed to the user's organization, read in one batch
request: new referrals (crisis and urgent first, with their clock), open referrals offered to
the organization, referrals in care, and the count of each state. With a filter, one list.

"Addressed to us" means `Task.owner` is the organization or one of its HealthcareServices
(`Us.refs`); open referrals are those whose `task-candidate` names one of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

from fhir_server.web.api import ApiError, FhirApi, entries, next_link
from fhir_server.web.filters import ReferralFilters, page_params
from fhir_server.web.names import Names
from fhir_server.web.workspace.rows import (
    ACTIVE,
    STATE_ORDER,
    STATUS_WORDS,
    WorkRow,
    care_order,
    urgency_order,
    work_rows,
)
from fhir_server.workflow.stalled import StalledPolicy

REFERRAL_CODE = "http://hl7.org/fhir/CodeSystem/task-code|fulfill"
NEW_LIMIT = 100
PAGE_SIZE = 25
PAGE_PARAMS = frozenset({"code", "owner", "status", "priority", "patient:Patient.name",
                         "patient:Patient.identifier", "authored-on", "_sort", "_count",
                         "_cursor", "_offset", "_page", "_after", "_before", "_include",
                         "_include:iterate"})


@dataclass
class Us:
    """The signed-in user's organization and the references that stand for it."""

    organization: str
    name: str
    services: list[dict] = field(default_factory=list)

    @property
    def refs(self) -> list[str]:
        return [self.organization, *(f"HealthcareService/{s['id']}" for s in self.services)]

    @property
    def owner_param(self) -> str:
        return ",".join(self.refs)


def load_us(api: FhirApi, organization: str, name: str) -> Us:
    """The organization's HealthcareServices (its other references)."""
    bundle = api.search("HealthcareService", [("organization", organization),
                                              ("_count", "100")])
    return Us(organization, name, entries(bundle))


@dataclass
class Filters(ReferralFilters):
    STATUSES = STATE_ORDER

    def params(self, us: Us) -> list[tuple[str, str]]:
        """The queue's search with these filters (a patient filter with a digit looks for
        the record number, otherwise the name)."""
        key = "patient:Patient.identifier" if any(c.isdigit() for c in self.patient) \
            else "patient:Patient.name"
        return [("code", REFERRAL_CODE), ("owner", us.owner_param),
                ("_sort", "-authored-on"), ("_count", str(PAGE_SIZE)),
                *self.common_params(key)]


@dataclass
class Queue:
    us: Us
    urgent: list[WorkRow]
    new: list[WorkRow]
    offers: list[WorkRow]
    in_care: list[WorkRow]
    counts: list[tuple[str, str, int]]  # (status, words, count)
    more_new: bool
    found: list[WorkRow] | None = None  # the filtered list, when filters are set
    next_page: str = ""

    @property
    def version(self) -> str:
        rows = self.urgent + self.new + self.offers + self.in_care + (self.found or [])
        stamp = max((r.updated for r in rows), default="")
        return f"{stamp}/{len(rows)}/" + ",".join(str(c) for _, _, c in self.counts)


ACTIVE_LIMIT = 50
#: What a queue search brings along so that its rows need no further reads: the requester
#: (a clinician's role) with their clinic and their name, and the patient (`NAMES`; an open
#: referral's patient stays hidden until it is accepted, so `OFFER_NAMES` leaves it out).
OFFER_NAMES = (("_include", "Task:requester:PractitionerRole"),
               ("_include:iterate", "PractitionerRole:organization"),
               ("_include:iterate", "PractitionerRole:practitioner"))
NAMES = (("_include", "Task:patient"), *OFFER_NAMES)


def section_urls(us: Us) -> list[str]:
    """The searches of the unfiltered queue's sections: new, offered to us, in care."""
    base = [("code", REFERRAL_CODE), ("owner", us.owner_param)]
    return ["Task?" + urlencode(params) for params in (
        [*base, ("status", "requested"), ("_sort", "-authored-on"), ("_count", str(NEW_LIMIT)),
         *NAMES],
        [("code", REFERRAL_CODE), ("candidate", us.owner_param), ("status", "requested"),
         ("owner:missing", "true"), ("_sort", "-authored-on"), ("_count", "50"), *OFFER_NAMES],
        [*base, ("status", ",".join(ACTIVE)), ("_sort", "-_lastUpdated"),
         ("_count", str(ACTIVE_LIMIT)), *NAMES])]


def count_url(us: Us, status: str) -> str:
    """How many referrals addressed to us are in `status`."""
    return "Task?" + urlencode({"code": REFERRAL_CODE, "owner": us.owner_param,
                                "status": status, "_summary": "count"})


def _ok(answers: list) -> list[dict]:
    for answer in answers:
        if isinstance(answer, ApiError):
            raise answer
    return answers


def load_counts(api: FhirApi, us: Us, known: dict[str, int]) -> list[tuple[str, str, int]]:
    """(status, words, count) for every state: `known` counts as given, the others
    counted by the server (one batch)."""
    missing = [s for s in STATE_ORDER if s not in known]
    counted = dict(zip(missing, (int(b.get("total") or 0) for b in _ok(
        api.batch([count_url(us, s) for s in missing]))), strict=True))
    return [(s, STATUS_WORDS[s], known.get(s, counted.get(s, 0))) for s in STATE_ORDER]


def load_queue(api: FhirApi, names: Names, us: Us, policy: StalledPolicy,
               filters: Filters, page: str = "") -> Queue:
    """Everything the queue page shows: the sections (one batch), the counts the sections
    do not give exactly (one batch), the names (one batch); with a filter, its list."""
    listing = filters.active or bool(page)
    requested: list[dict] = []
    offered: list[dict] = []
    active: list[dict] = []
    known: dict[str, int] = {}
    if not listing:
        bundles = _ok(api.batch(section_urls(us)))
        requested, offered, active = (entries(b) for b in bundles)
        for bundle in bundles:
            for included in entries(bundle, "include"):
                names.know(included)
        if len(requested) < NEW_LIMIT:
            known["requested"] = len(requested)
        if len(active) < ACTIVE_LIMIT:
            known.update({s: sum(1 for t in active if t.get("status") == s) for s in ACTIVE})
    counts = load_counts(api, us, known)
    found_tasks: list[dict] = []
    next_page = ""
    if listing:
        bundle = api.search("Task", page_params(page, PAGE_PARAMS)
                             or [*filters.params(us), *NAMES])
        for included in entries(bundle, "include"):
            names.know(included)
        more = next_link(bundle)
        next_page = ("?" + urlsplit(more).query) if more else ""
        found_tasks = entries(bundle)
    rows = work_rows(names, [*requested, *offered, *active, *found_tasks], policy)
    by_task = {id(r.task): r for r in rows}

    def rows_of(tasks: list[dict]) -> list[WorkRow]:
        return [by_task[id(t)] for t in tasks]

    new_rows = urgency_order(rows_of(requested))
    return Queue(us=us, urgent=[r for r in new_rows if r.urgent],
                 new=[r for r in new_rows if not r.urgent],
                 offers=urgency_order(rows_of(offered)), in_care=care_order(rows_of(active)),
                 counts=counts, more_new=len(requested) >= NEW_LIMIT,
                 found=urgency_order(rows_of(found_tasks)) if listing else None,
                 next_page=next_page)
