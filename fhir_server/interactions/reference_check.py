"""References are capabilities: a write may only reference resources on this server that
the writer may read.

Every write path (create, update, patch, conditional writes, bundle entries, operations
that write) runs this check on the references the write *adds* (references already in the
previous version were checked when their writer made them). A local reference (`Type/id`,
`Type/id/_history/n`, or an absolute URL under this server's base) must name a live
resource that the writer may read under the access policy: its organization compartment
and its patient context, not its scope letters (a client may point at a Practitioner
without holding `Practitioner.r`). Otherwise the write is refused with 422 and the same
message whether the target is hidden or missing, so the answer reveals nothing.

For the server's own writes and development without authentication the check is the
existence half alone: referential integrity (a dangling local reference is refused).

In a transaction each entry is checked when it is written, against what was visible
before the transaction (its own earlier entries cannot lend visibility: a write is checked
before it is made), except references to resources the transaction itself creates or
updates, which may come in any order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from fhir_server.auth.context import AccessContext
from fhir_server.auth.scopes import parse_scopes
from fhir_server.errors import FhirError, Issue
from fhir_server.interactions import access
from fhir_server.interactions.context import Call
from fhir_server.interactions.phases import WriteEvent
from fhir_server.interactions.references import located_references
from fhir_server.resource_types import is_resource_type
from fhir_server.storage import access_sql
from fhir_server.storage.db import Connection

_LOCAL = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]+)?$")
#: Resources whose references point into their own content, not at this server.
_SELF_CONTAINED = frozenset({"Bundle"})


@dataclass(frozen=True)
class Pending:
    """A reference a write adds: its target and where it stands."""

    res_type: str
    res_id: str
    reference: str
    expression: str


def local_target(reference: str, base_url: str) -> tuple[str, str] | None:
    """(type, id) when `reference` names a resource on this server, else None (contained
    `#x`, `urn:` placeholders, other servers, logical or malformed references)."""
    ref = reference
    if ref.startswith(("http://", "https://")):
        prefix = base_url.rstrip("/") + "/"
        if not base_url or not ref.startswith(prefix):
            return None
        ref = ref[len(prefix):]
    match = _LOCAL.match(ref)
    if match is None or not is_resource_type(match.group(1)):
        return None
    return match.group(1), match.group(2)


def added_references(previous: dict | None, new: dict, base_url: str) -> list[Pending]:
    """The local references in `new` that `previous` did not already hold."""
    if new.get("resourceType") in _SELF_CONTAINED:
        return []
    held: set[tuple[str, str]] = set()
    if previous is not None:
        for ref, _ in located_references(previous, previous.get("resourceType", "")):
            target = local_target(ref, base_url)
            if target is not None:
                held.add(target)
    out = []
    for ref, where in located_references(new, new.get("resourceType", "")):
        target = local_target(ref, base_url)
        if target is not None and target not in held:
            out.append(Pending(target[0], target[1], ref, where))
    return out


def check_write(event: WriteEvent) -> list:
    """The check-phase hook, after every transform: check the references the write adds
    (422 when one fails)."""
    if event.resource is None:
        return []
    call = event.call
    own = call.transaction_targets
    pending = [p for p in added_references(event.previous, event.resource, call.base_url)
               if (p.res_type, p.res_id) not in own]
    verify(event.conn, call, pending)
    return []


def verify(conn: Connection, call: Call, pending: list[Pending]) -> None:
    """Raise 422 (one issue per reference) unless every target is live and readable."""
    if not pending:
        return
    keys = sorted({(p.res_type, p.res_id) for p in pending})
    found = access_sql.visible_keys(conn, keys, reader_clause(conn, call))
    issues = [_issue(p) for p in pending if (p.res_type, p.res_id) not in found]
    if issues:
        raise FhirError(422, "processing", issues[0].diagnostics, issues=issues)


def _issue(p: Pending) -> Issue:
    return Issue("error", "processing",
                 f"Reference '{p.reference}' cannot be resolved: there is no such "
                 "resource on this server that you may read", [p.expression])


def reader_clause(conn: Connection, call: Call) -> Any:
    """The narrowing that decides what the writer may read (None: existence only)."""
    ctx = access.ctx_of(call)
    if ctx.unrestricted or (ctx.is_admin and ctx.organization is None):
        return None
    reader = Call(services=call.services, base_url=call.base_url, access=reader_of(ctx),
                  hook_state=call.hook_state)
    return lambda r, res_type: access.type_clause(conn, reader, res_type, r, "read")


def reader_of(ctx: AccessContext) -> AccessContext:
    """`ctx` with its scope letters and granular filters widened to reading every type in
    the same contexts (patient/user/system): what remains is the organization compartment
    and the patient context, the data policy itself."""
    kinds = sorted(ctx.scopes.contexts()) or ["system"]
    return replace(ctx, scopes=parse_scopes(" ".join(f"{kind}/*.rs" for kind in kinds)))
