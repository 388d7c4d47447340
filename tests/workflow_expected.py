"""The referral Task state machine as the issue states it, written out independently of the
implementation (fhir_server/workflow) so the workflow tests check one against the other."""

from __future__ import annotations

STATUSES = ["draft", "requested", "accepted", "rejected", "cancelled", "in-progress",
            "on-hold", "failed", "completed", "entered-in-error"]
EXPECTED_NEXT = {
    "draft": {"requested", "entered-in-error"},
    "requested": {"accepted", "rejected", "cancelled", "entered-in-error"},
    "accepted": {"in-progress", "on-hold", "cancelled", "completed", "failed",
                 "entered-in-error"},
    "in-progress": {"on-hold", "cancelled", "completed", "failed", "entered-in-error"},
    "on-hold": {"in-progress", "cancelled", "completed", "failed", "entered-in-error"},
    "rejected": {"entered-in-error"},
    "cancelled": {"entered-in-error"},
    "failed": {"entered-in-error"},
    "completed": {"entered-in-error"},
    "entered-in-error": set(),
}
REQUESTER_MAY_SET = {"requested", "cancelled", "entered-in-error"}
OWNER_MAY_SET = {"accepted", "rejected", "in-progress", "on-hold", "completed", "failed",
                 "cancelled"}
