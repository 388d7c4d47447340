"""Pure builders of FHIR R4 `AuditEvent` and `Provenance` resources (dict in, dict out).

AuditEvents follow the IHE Basic Audit Log Patterns (BALP 1.1) for RESTful interactions:
`meta.profile` names the pattern (Read, Query, Create, Update, Delete, and their Patient*
forms when a patient is identifiable); `type` rest, `subtype` the restful-interaction
code, `action`; agents: the user (fhirUser, `requestor`, the token id as `policy`), the
client (Source Role ID, its client_id, the network address), the server (Destination
Role ID) and the Organization they act for; entities: the patient(s) (Person / Patient
role), the resources (System Object / Domain Resource) and, for searches, the query
(base64, role Query). When: `recorded`. Outcome: `0` success, `4` minor failure (denied:
401/403/404 by policy), `8` serious failure.
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from typing import Any

from fhir_server import SOFTWARE_NAME
from fhir_server.auth.context import AccessContext

CLIENT_ID_SYSTEM = "urn:ietf:params:oauth:client-id"
TOKEN_ID_PREFIX = "urn:x-mh-referral:token:"
_REST = {
    "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
    "code": "rest",
    "display": "RESTful Operation",
}
_AUTHN = {
    "system": "http://dicom.nema.org/resources/ontology/DCM",
    "code": "110114",
    "display": "User Authentication",
}
_ACTION = {
    "create": "C", "read": "R", "vread": "R", "history-instance": "R", "history-type": "R",
    "history-system": "R", "search-type": "E", "search-system": "E", "update": "U",
    "patch": "U", "delete": "D", "batch": "E", "transaction": "E", "operation": "E",
}
_RESTFUL = {  # our interaction names -> http://hl7.org/fhir/restful-interaction codes
    "history-instance": "history-instance", "history-type": "history-type",
    "history-system": "history-system", "search-type": "search-type",
    "search-system": "search-system",
}
OUTCOME_SUCCESS, OUTCOME_DENIED, OUTCOME_FAILED = "0", "4", "8"

BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit."
_BALP_PATTERN = {"R": "Read", "E": "Query", "C": "Create", "U": "Update", "D": "Delete"}
_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
_OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
_USER_AGENT = "https://profiles.ihe.net/ITI/BALP/CodeSystem/UserAgentTypes"


def now_instant(ts: float | None = None) -> str:
    """An R4 instant (UTC, milliseconds)."""
    moment = datetime.fromtimestamp(ts, UTC) if ts is not None else datetime.now(UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _agents(ctx: AccessContext | None, client_id: str | None, address: str | None) -> list:
    agents: list[dict[str, Any]] = []
    network = {"network": {"address": address, "type": "2"}} if address else {}
    if ctx is not None and ctx.fhir_user:
        user_agent: dict[str, Any] = {
            "type": {"coding": [{
                "system": _USER_AGENT, "code": "UserOauthAgent",
                "display": "User OAuth Agent participant",
            }]},
            "who": {"reference": ctx.fhir_user, "display": ctx.user or ctx.fhir_user},
            "requestor": True,
            **network,
        }
        if ctx.token_id:
            user_agent["policy"] = [TOKEN_ID_PREFIX + ctx.token_id]
        agents.append(user_agent)
    cid = client_id or (ctx.client_id if ctx else None)
    app: dict[str, Any] = {
        "type": {"coding": [{"system": _DCM, "code": "110153", "display": "Source Role ID"}]},
        "who": {"identifier": {"system": CLIENT_ID_SYSTEM, "value": cid or "unknown"}},
        "requestor": not agents,
        **({} if agents else network),
    }
    if ctx is not None and ctx.organization:
        app["who"]["display"] = f"client {cid} for {ctx.organization}"
    agents.append(app)
    if ctx is not None and ctx.organization:
        agents.append({
            "type": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
                "code": "datacollector", "display": "data collector",
            }]},
            "who": {"reference": ctx.organization},
            "requestor": False,
        })
    return agents


def build_audit_event(
    ctx: AccessContext | None,
    interaction: str,
    outcome: str,
    *,
    entities: list[str] | None = None,
    query: str | None = None,
    description: str | None = None,
    client_id: str | None = None,
    address: str | None = None,
    recorded: float | None = None,
    authentication: bool = False,
    patients: list[str] | None = None,
    server: str | None = None,
) -> dict[str, Any]:
    """An AuditEvent for one FHIR interaction (or, `authentication=True`, a token request).

    `entities` are references ("Task/1" or "Task/1/_history/2"); `patients` the Patient
    references the interaction identifies; `query` is the raw search query string (stored
    base64 in `entity.query`, as R4 requires); `server` this server's FHIR base.
    """
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": uuid.uuid4().hex,
        "type": _AUTHN if authentication else _REST,
        "action": "E" if authentication else _ACTION.get(interaction, "E"),
        "recorded": now_instant(recorded),
        "outcome": outcome,
        "agent": _agents(ctx, client_id, address) + [{
            "type": {"coding": [{"system": _DCM, "code": "110152",
                                 "display": "Destination Role ID"}]},
            "who": {"display": server or SOFTWARE_NAME}, "requestor": False}],
        "source": {
            "observer": {"display": SOFTWARE_NAME},
            "type": [{
                "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                "code": "4", "display": "Application Server",
            }],
        },
    }
    if not authentication:
        event["subtype"] = [{
            "system": "http://hl7.org/fhir/restful-interaction",
            "code": _RESTFUL.get(interaction, interaction),
        }]
    else:
        event["subtype"] = [{"system": "urn:x-mh-referral:auth-event", "code": interaction}]
    if description:
        event["outcomeDesc"] = description
    items: list[dict[str, Any]] = [{
        "what": {"reference": ref},
        "type": {"system": _ENTITY_TYPE, "code": "1", "display": "Person"},
        "role": {"system": _OBJECT_ROLE, "code": "1", "display": "Patient"},
    } for ref in dict.fromkeys(patients or [])]
    for ref in entities or []:
        items.append({
            "what": {"reference": ref},
            "type": {"system": _ENTITY_TYPE, "code": "2", "display": "System Object"},
            "role": {"system": _OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
        })
    if query is not None:
        items.append({
            "type": {"system": _ENTITY_TYPE, "code": "2", "display": "System Object"},
            "role": {"system": _OBJECT_ROLE, "code": "24", "display": "Query"},
            "query": base64.b64encode(query.encode()).decode(),
        })
    if items:
        event["entity"] = items
    if not authentication:
        pattern = _BALP_PATTERN.get(event["action"], "Query")
        event["meta"] = {"profile": [BALP + ("Patient" if patients else "") + pattern]}
    return event


def build_provenance(
    ctx: AccessContext,
    target: str,
    activity: str,
    *,
    recorded: float | None = None,
) -> dict[str, Any]:
    """A Provenance for a referral Task/ServiceRequest write.

    `target` is a versioned reference ("Task/1/_history/3"); `activity` is CREATE, UPDATE
    or DELETE (v3-DataOperation).
    """
    who: dict[str, Any]
    if ctx.fhir_user:
        who = {"reference": ctx.fhir_user}
    else:
        who = {"identifier": {"system": CLIENT_ID_SYSTEM, "value": ctx.client_id or "system"}}
    agent: dict[str, Any] = {
        "type": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
            "code": "author", "display": "Author",
        }]},
        "who": who,
    }
    if ctx.organization and ctx.fhir_user:
        agent["onBehalfOf"] = {"reference": ctx.organization}
    agents = [agent]
    if ctx.fhir_user and ctx.client_id:
        agents.append({
            "type": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                "code": "assembler", "display": "Assembler",
            }]},
            "who": {"identifier": {"system": CLIENT_ID_SYSTEM, "value": ctx.client_id}},
        })
    return {
        "resourceType": "Provenance",
        "target": [{"reference": target}],
        "recorded": now_instant(recorded),
        "activity": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
            "code": activity.upper(),
        }]},
        "agent": agents,
    }
