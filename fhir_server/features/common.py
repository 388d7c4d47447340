"""Helpers shared by the features (and by the directory matching they install): who is
calling and the lookups the workflow rules need. This module
imports no feature, so any feature may import it without a cycle.
"""

from __future__ import annotations

from typing import Any

from fhir_server.auth.context import AccessContext
from fhir_server.interactions import access
from fhir_server.interactions.context import Call
from fhir_server.storage.db import Connection
from fhir_server.storage.repository import Repository
from fhir_server.workflow import open_referral


def access_of(call: Call) -> AccessContext:
    """The caller's AccessContext (a call without one may do nothing)."""
    return access.ctx_of(call)


def ref_of(value: Any) -> str | None:
    """The `reference` of a Reference element (None when absent)."""
    return value.get("reference") if isinstance(value, dict) else None


def read_ref(repo: Repository, ref: str | None) -> dict | None:
    """The current resource a relative `Type/id` reference names (None if absent)."""
    if not ref or ref.count("/") != 1:
        return None
    res_type, res_id = ref.split("/")
    return repo.current(res_type, res_id)


def party_organizations(repo: Repository, *resources: dict | None) -> dict[str, str]:
    """PractitionerRole / HealthcareService parties (requester, owner, open-referral
    candidates) mapped to their Organization."""
    out: dict[str, str] = {}
    for resource in resources:
        if not resource:
            continue
        parties = [ref_of(resource.get(key)) for key in ("requester", "owner")]
        parties += open_referral.candidates(resource)
        for ref in parties:
            if not ref or not ref.startswith(("PractitionerRole/", "HealthcareService/")):
                continue
            party = read_ref(repo, ref)
            if party is None:
                continue
            org = ref_of(party.get("organization") or party.get("providedBy"))
            if org:
                out[ref] = org
    return out


def patient_flags(conn: Connection, patient_ref: str | None) -> list[dict]:
    """Every current Flag of the patient (safety or not; callers filter)."""
    if not patient_ref:
        return []
    return Repository(conn).search_resources("Flag", [("patient", patient_ref)])
