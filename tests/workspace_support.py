"""Test support for the provider workspace: a referral network (a clinic, two providers and
a bystander organization, their staff and services) and referrals sent through the API the
way the care team's app sends them (one transaction, `fhir_server.web.clinician.bundle`)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from fhir_server.web.clinician.bundle import Referral, Routing, referral_entries
from tests.live import FhirHttp
from tests.web_support import Network, Staff

THERAPY = ("306226009", "Referral to mental health counseling service")
CRISIS = ("183866009", "Referral to emergency clinic")


TOKEN_REUSE = 200.0  # seconds a backend token is reused (they last 300 s)


@dataclass
class World:
    net: Network
    clinic_id: str  # the referring clinic's Organization id
    doctor: Staff
    lakeside: Staff  # intake worker of the first provider
    hillside: Staff  # intake worker of the second provider
    outsider: Staff  # staff of an organization that receives nothing
    patient: str
    other_patient: str
    _clients: dict[str, tuple[float, FhirHttp]] = field(default_factory=dict)

    def client(self, org_id: str) -> FhirHttp:
        """The organization's Backend Services client, with a token that has time left
        (a slow run of a module outlives one token)."""
        kept = self._clients.get(org_id)
        if kept is None or time.time() - kept[0] > TOKEN_REUSE:
            kept = self._clients[org_id] = (time.time(), self.net.client_for(org_id))
        return kept[1]

    @property
    def clinic(self) -> FhirHttp:
        """The referring clinic's backend client."""
        return self.client(self.clinic_id)


def build_world(net: Network, suffix: str = "") -> World:
    """Organizations, services, staff and two screened patients of the clinic."""
    net.organization(f"riverside{suffix}", "Riverside Family Health Center")
    net.organization(f"lakeside{suffix}", "Lakeside Behavioral Health")
    net.organization(f"hillside{suffix}", "Hillside Counseling")
    net.organization(f"bayview{suffix}", "Bayview Community Services")
    net.service(f"lakeside-therapy{suffix}", f"lakeside{suffix}", "Lakeside counseling",
                "therapy", THERAPY[0])
    net.service(f"lakeside-crisis{suffix}", f"lakeside{suffix}", "Lakeside 24/7 crisis team",
                "crisis", CRISIS[0], around_the_clock=True)
    net.service(f"hillside-therapy{suffix}", f"hillside{suffix}", "Hillside talk therapy",
                "therapy", THERAPY[0])
    net.service(f"bayview-therapy{suffix}", f"bayview{suffix}", "Bayview counseling",
                "therapy", THERAPY[0])
    doctor = net.staff(f"dr_okafor{suffix}", f"riverside{suffix}", "Amara", "Okafor")
    lakeside = net.staff(f"lee_lakeside{suffix}", f"lakeside{suffix}", "Jordan", "Lee")
    hillside = net.staff(f"kim_hillside{suffix}", f"hillside{suffix}", "Robin", "Kim")
    outsider = net.staff(f"ng_bayview{suffix}", f"bayview{suffix}", "Casey", "Ng")
    world_clinic = f"riverside{suffix}"
    clinic = net.client_for(world_clinic)
    patient = net.screened_patient(clinic, doctor, "Marisol", "Delgado",
                                   [2, 2, 2, 2, 2, 2, 2, 2, 2], [2, 2, 2, 1, 1, 1, 1])
    other = net.screened_patient(clinic, doctor, "Tomas", "Reyes", [1, 1, 1, 1, 1, 1, 1, 1, 0])
    return World(net, world_clinic, doctor, lakeside, hillside, outsider, patient, other)


def send_referral(world: World, patient_id: str, *, owner: str | None = None,
                  candidates: tuple[str, ...] = (), priority: str = "routine",
                  consent: bool = True, service: tuple[str, str] = THERAPY,
                  reason: str = "PHQ-9 18 (moderately severe); please see within two weeks"
                  ) -> dict:
    """Send a referral as the clinic's app does; returns the created Task."""
    clinic = world.clinic
    patient = clinic.get(f"Patient/{patient_id}").json()
    responses = clinic.get("QuestionnaireResponse", params={
        "subject": f"Patient/{patient_id}"}).json()
    supporting = [f"QuestionnaireResponse/{e['resource']['id']}"
                  for e in responses.get("entry") or []]
    referral = Referral(
        key=str(uuid.uuid4()), patient=patient, requester=world.doctor.role,
        organization=world.doctor.organization,
        routing=Routing(owner=owner, candidates=candidates), service_code=service,
        priority=priority, reason=reason, supporting=supporting, consent=consent)
    answer = clinic.post("", {"resourceType": "Bundle", "type": "transaction",
                              "entry": referral_entries(referral)},
                         headers={"Prefer": "return=representation"})
    assert answer.status_code == 200, answer.text
    return next(e["resource"] for e in answer.json()["entry"]
                if e["resource"]["resourceType"] == "Task")
