"""Who made a stored version: stamped into `meta.extension` on write, read back by $timeline.

Stored history has no author column, so every Task/ServiceRequest write path should call
`stamp_author(new, ctx)` before storing; the stamp overwrites any client-sent value.
"""

from __future__ import annotations

from fhir_server.json_tree import copy_tree
from fhir_server.workflow.access_context import AccessContext
from fhir_server.workflow.canonical import EXT_MODIFIED_BY


def author_reference(ctx: AccessContext) -> dict:
    """A Reference for the caller: fhirUser, else organization, else a display only."""
    ref: dict = {}
    if ctx.fhir_user:
        ref["reference"] = ctx.fhir_user
    elif ctx.organization:
        ref["reference"] = ctx.organization
    display = "system" if ctx.is_system else (ctx.user or ctx.client_id)
    if ctx.fhir_user and ctx.organization:
        display = f"{display or ctx.fhir_user} ({ctx.organization})"
    if display:
        ref["display"] = display
    return ref or {"display": "anonymous"}


def stamp_author(resource: dict, ctx: AccessContext) -> dict:
    """A copy of `resource` whose meta.extension names the caller as the version's author."""
    out = copy_tree(resource)
    meta = out.setdefault("meta", {})
    exts = [e for e in meta.get("extension") or [] if e.get("url") != EXT_MODIFIED_BY]
    exts.append({"url": EXT_MODIFIED_BY, "valueReference": author_reference(ctx)})
    meta["extension"] = exts
    return out


def author_of(version: dict) -> dict | None:
    """The Reference stamped on a stored version (None when it carries none)."""
    for ext in (version.get("meta") or {}).get("extension") or []:
        if ext.get("url") == EXT_MODIFIED_BY and isinstance(ext.get("valueReference"), dict):
            return ext["valueReference"]
    return None
