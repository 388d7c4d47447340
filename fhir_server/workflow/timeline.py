"""`GET Task/[id]/$timeline`: the ordered status changes of a Task, from its history.

Output is a `Parameters` resource (the natural shape for an operation result, and readable):
  task           valueReference  the Task
  replaces       valueReference  previous Task in a $redirect chain (when there is one)
  redirectedTo   valueReference  next Task in a $redirect chain (when there is one)
  event (repeating, oldest first) with parts:
    kind            valueCode     status | stalled | unstalled | declined (a candidate of an
                                  open referral declined it)
    version         valueId       the history version that made the change
    time            valueInstant  meta.lastUpdated of that version
    status          valueCode     status after the change
    previousStatus  valueCode     status before (absent for the first version)
    by              valueReference who made the version (meta.extension modified-by)
    statusReason    valueString   Task.statusReason.text, when given
    owner           valueReference Task.owner at that version, when set
    businessStatus  valueCode     the stalled code (kind stalled)
    candidate       valueReference the candidate that declined (kind declined; its reason
                                  is the statusReason part)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from fhir_server.workflow.authorship import author_of
from fhir_server.workflow.open_referral import declined
from fhir_server.workflow.redirect import redirect_links
from fhir_server.workflow.stalled import current_mark
from fhir_server.workflow.times import format_instant, parse_instant


@dataclass(frozen=True)
class Change:
    """One timeline event."""

    kind: str
    version: str
    at: datetime | None
    status: str | None
    previous_status: str | None
    by: dict | None
    reason: str | None
    owner: str | None
    mark: str | None
    candidate: str | None = None


def _version_key(version: dict) -> tuple[int, str]:
    vid = str((version.get("meta") or {}).get("versionId") or "0")
    return (int(vid) if vid.isdigit() else 0, (version.get("meta") or {}).get("lastUpdated", ""))


def ordered_versions(versions: list[dict | None]) -> list[dict]:
    """Versions sorted by versionId (deleted versions, given as None, are skipped)."""
    return sorted((v for v in versions if v), key=_version_key)


def status_changes(versions: list[dict | None]) -> list[Change]:
    """Status changes, stalled-mark changes and open-referral declines, oldest first."""
    out: list[Change] = []
    prev_status: str | None = None
    prev_mark: str | None = None
    prev_declined: list[tuple[str, str]] = []
    for index, version in enumerate(ordered_versions(versions)):
        status, mark = version.get("status"), current_mark(version)
        meta = version.get("meta") or {}
        common = {
            "version": str(meta.get("versionId") or index + 1),
            "at": parse_instant(meta.get("lastUpdated")),
            "status": status, "by": author_of(version),
            "reason": (version.get("statusReason") or {}).get("text"),
            "owner": (version.get("owner") or {}).get("reference"),
        }
        now_declined = declined(version)
        for ref, text in now_declined[len(prev_declined):] if index else []:
            out.append(Change("declined", previous_status=prev_status, mark=None,
                              candidate=ref, **{**common, "reason": text}))
        prev_declined = now_declined
        if index == 0 or status != prev_status:
            out.append(Change("status", previous_status=prev_status if index else None,
                              mark=None, **common))
        if mark != prev_mark:
            kind = "stalled" if mark else "unstalled"
            out.append(Change(kind, previous_status=prev_status if index else None,
                              mark=mark or prev_mark, **common))
        prev_status, prev_mark = status, mark
    return out


def build_timeline(versions: list[dict | None]) -> dict:
    """The $timeline Parameters for a Task's history versions (any order)."""
    ordered = ordered_versions(versions)
    params: list[dict] = []
    if ordered:
        latest = ordered[-1]
        params.append({"name": "task",
                       "valueReference": {"reference": f"Task/{latest.get('id')}"}})
        for name, ref in redirect_links(latest).items():
            if ref:
                params.append({"name": name, "valueReference": {"reference": ref}})
    for change in status_changes(ordered):
        params.append({"name": "event", "part": _parts(change)})
    return {"resourceType": "Parameters", "parameter": params}


def _parts(change: Change) -> list[dict]:
    parts: list[dict] = [{"name": "kind", "valueCode": change.kind},
                         {"name": "version", "valueId": change.version}]
    if change.at:
        parts.append({"name": "time",
                      "valueInstant": format_instant(change.at)})
    if change.status:
        parts.append({"name": "status", "valueCode": change.status})
    if change.previous_status:
        parts.append({"name": "previousStatus", "valueCode": change.previous_status})
    if change.by:
        parts.append({"name": "by", "valueReference": change.by})
    if change.reason and change.kind in ("status", "declined"):
        parts.append({"name": "statusReason", "valueString": change.reason})
    if change.owner:
        parts.append({"name": "owner", "valueReference": {"reference": change.owner}})
    if change.mark:
        parts.append({"name": "businessStatus", "valueCode": change.mark})
    if change.candidate:
        parts.append({"name": "candidate", "valueReference": {"reference": change.candidate}})
    return parts
