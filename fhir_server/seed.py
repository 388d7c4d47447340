"""Definitional resources the server publishes (SubscriptionTopics, OperationDefinitions,
CodeSystems, Questionnaires, StructureDefinitions...), stored as ordinary resources so they
are readable and searchable. Idempotent: unchanged resources get no new version."""

from __future__ import annotations

import copy

from fhir_server.auth.context import SYSTEM
from fhir_server.interactions import crud
from fhir_server.interactions.context import Call, Services
from fhir_server.json_tree import same_content
from fhir_server.storage.repository import Repository


def seed_definitions(services: Services) -> int:
    """Store every feature's definitional resources; returns how many were written."""
    call = Call(services=services, base_url=services.settings.base_url or "", access=SYSTEM)
    written = 0
    for provider in services.seed_providers:
        for resource in provider():
            resource = copy.deepcopy(resource)
            res_type, res_id = resource["resourceType"], resource["id"]
            with services.db.write() as conn:
                current = Repository(conn).read(res_type, res_id)
                if current is not None and not current.deleted and same_content(
                        current.resource(), resource):
                    continue
                crud.check_valid(resource, res_type, res_id)
                crud.store_update(conn, call, res_type, res_id, resource, None, "PUT")
                written += 1
    return written
