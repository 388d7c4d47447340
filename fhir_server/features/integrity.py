"""Referential integrity on delete (`FHIR_SERVER_REFERENTIAL_INTEGRITY_ON_DELETE`): deleting a
resource that live resources still reference is refused with 409, naming the referrers, as
HAPI FHIR does by default. `referral` (the default) applies it to the resource types a
referral depends on, `all` to every type, `off` to none. AuditEvent and Provenance records do
not hold a resource alive: they describe what happened to it. References are found through
the reference search parameters (the same index a search uses); referrers the caller may not
read are counted, not named. A transaction that deletes a resource and its referrers deletes
the referrers first (DELETE entries run in entry order)."""

from __future__ import annotations

from fhir_server.errors import FhirError, Issue
from fhir_server.interactions.context import Call, Services
from fhir_server.interactions.operations import OperationRegistry
from fhir_server.interactions.phases import WriteEvent
from fhir_server.interactions.reference_check import reader_clause
from fhir_server.storage import access_sql
from fhir_server.storage.db import Connection
from fhir_server.storage.repository import Repository

MODES = ("referral", "all", "off")
# The resources of a referral and the parties to it (directory entries such as
# HealthcareService, Location and Endpoint are not: a provider may withdraw a service).
REFERRAL_TYPES = frozenset({
    "Patient", "RelatedPerson", "Practitioner", "PractitionerRole", "Organization", "CareTeam",
    "ServiceRequest", "Task", "Consent", "QuestionnaireResponse", "Observation", "Condition",
    "Procedure", "Goal", "DocumentReference", "Communication", "CommunicationRequest",
    "CarePlan", "Coverage", "Encounter"})
RECORD_TYPES = frozenset({"AuditEvent", "Provenance"})


def install(services: Services, _registry: OperationRegistry) -> None:
    """Refuse deletes that would leave references dangling, per the setting."""
    mode = services.settings.referential_integrity_on_delete
    if mode not in MODES:
        raise SystemExit(f"FHIR_SERVER_REFERENTIAL_INTEGRITY_ON_DELETE must be one of "
                         f"{', '.join(MODES)}, not {mode!r}")
    if mode == "off":
        return

    def check(event: WriteEvent) -> list[Issue]:
        if event.interaction != "delete" or event.previous is None:
            return []
        res_type, res_id = event.res_type, event.res_id
        found = Repository(event.conn).referrers(res_type, res_id, ignore_types=RECORD_TYPES)
        if found:
            named = _named(event.conn, event.call, found)
            raise FhirError(409, "conflict",
                            f"{res_type}/{res_id} is still referenced by {named}; delete or "
                            "change those first (FHIR_SERVER_REFERENTIAL_INTEGRITY_ON_DELETE)",
                            f"{res_type}")
        return []

    services.phases.add("check", "integrity.referenced-on-delete", check, order=50,
                        types=REFERRAL_TYPES if mode == "referral" else None)


def _named(conn: Connection, call: Call, found: list[tuple[str, str, str]]) -> str:
    """The referrers the caller may read, by name; the others only counted (their ids are
    not the caller's to learn)."""
    readable = access_sql.visible_keys(conn, [(t, i) for t, i, _p in found],
                                       reader_clause(conn, call))
    named = [f"{t}/{i} ({param})" for t, i, param in found if (t, i) in readable]
    hidden = len(found) - len(named)
    if hidden:
        named.append(f"{hidden} resource{'s' if hidden > 1 else ''} you may not read")
    return ", ".join(named)
