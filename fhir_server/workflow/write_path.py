"""One call per write for the interaction layer: check, then return what to store.

`prepare_task_write` = `check_task_write` + reject an open referral its last candidate
declined + drop the stalled mark when the status moved +
stamp the author (for $timeline). `prepare_service_request_write` = the ServiceRequest checks +
the referral Tasks that must follow (store them with a privileged context in the same
transaction; they are already consistent with the Task rules).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from fhir_server.workflow.access_context import AccessContext
from fhir_server.workflow.authorship import stamp_author
from fhir_server.workflow.open_referral import close_when_all_declined
from fhir_server.workflow.service_request_rules import (
    check_service_request_write,
    follow_up_task_changes,
)
from fhir_server.workflow.stalled import clear_on_move
from fhir_server.workflow.task_rules import check_task_write, is_referral_task


def prepare_task_write(
    previous: dict | None,
    new: dict,
    ctx: AccessContext,
    *,
    focus_service_request: dict | None,
    output_targets: Mapping[str, dict],
    party_organizations: Mapping[str, str] | None = None,
) -> dict:
    """The Task version to store (raises FhirError when the write is refused)."""
    check_task_write(previous, new, ctx, focus_service_request=focus_service_request,
                     output_targets=output_targets, party_organizations=party_organizations)
    if not (is_referral_task(new) or is_referral_task(previous)):
        return new
    return stamp_author(clear_on_move(previous, close_when_all_declined(previous, new)), ctx)


def prepare_service_request_write(
    previous: dict | None,
    new: dict,
    ctx: AccessContext,
    *,
    open_tasks: list[dict],
    now: datetime,
    party_organizations: Mapping[str, str] | None = None,
) -> tuple[dict, list[dict]]:
    """(the ServiceRequest to store, the referral Tasks to update because of it)."""
    check_service_request_write(previous, new, ctx, party_organizations=party_organizations)
    tasks = follow_up_task_changes(previous, new, open_tasks, now=now)
    return stamp_author(new, ctx), [stamp_author(t, ctx) for t in tasks]
