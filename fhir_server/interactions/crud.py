"""Instance and type interactions: create, read, vread, update, patch, delete and their
conditional forms. Each runs in one database transaction."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import jsonpatch

from fhir_server.errors import FhirError, Issue
from fhir_server.formats.json_body import BodyError, BodyLimits, check_tree
from fhir_server.interactions import access
from fhir_server.interactions.conditional import lock_for_create, matching_ids, parse_criteria
from fhir_server.interactions.context import Call
from fhir_server.interactions.phases import WriteEvent
from fhir_server.interactions.results import Result
from fhir_server.json_tree import copy_tree
from fhir_server.storage.db import Connection
from fhir_server.storage.repository import Repository, StoredResource, live, new_id
from profiles.base_r4 import errors_only, validate_base


def check_valid(resource: Any, res_type: str, res_id: str | None = None, *,
                call: Call | None = None) -> dict:
    """Base-validate a resource body for `res_type`; raise 400 with all issues if it breaks a
    base R4 rule. Warnings (e.g. an unknown extension) are kept on `call` for the write's
    OperationOutcome; with FHIR_SERVER_STRICT_PROFILES an unknown extension is an error."""
    strict = call is not None and call.settings.strict_profiles
    issues = validate_base(resource, expected_type=res_type, strict_extensions=strict)
    errors = errors_only(issues)
    if errors:
        status = 404 if errors[0].code == "not-supported" and \
            errors[0].expression == ["resourceType"] else 400
        raise FhirError(status, errors[0].code, errors[0].diagnostics,
                        issues=errors + [i for i in issues if i not in errors])
    if issues and call is not None:
        call.validation_warnings[id(resource)] = issues
    if res_id is not None:
        body_id = resource.get("id")
        if body_id is None:
            raise FhirError(400, "required", "The resource in an update must have an id",
                            f"{res_type}.id")
        if body_id != res_id:
            raise FhirError(400, "invalid",
                            f"Resource id '{body_id}' does not match the URL id '{res_id}'",
                            f"{res_type}.id")
    return resource


def committing(call: Call, conn, result: Result) -> Result:  # type: ignore[no-untyped-def]
    """The last step of a write interaction before its transaction commits: hand the result
    to the REST layer to remember for idempotent retries (Call.remember_response)."""
    call.remember_response(conn, result)
    return result


@contextmanager
def reading(call: Call, conn: Connection | None) -> Iterator[Connection]:
    """`conn` when the caller has one open (a Bundle's), else a new read transaction."""
    if conn is not None:
        yield conn
    else:
        with call.db.read() as own:
            yield own


# -- create ----------------------------------------------------------------------------
def create(call: Call, res_type: str, resource: dict, *, if_none_exist: str | None = None
           ) -> Result:
    """POST [type]: server-assigned id; conditional with If-None-Exist."""
    check_valid(resource, res_type, call=call)
    with call.write() as conn:
        return committing(call, conn, create_in(conn, call, res_type, resource,
                                                if_none_exist=if_none_exist))


def create_in(conn, call: Call, res_type: str, resource: dict, *,  # type: ignore[no-untyped-def]
              if_none_exist: str | None = None, res_id: str | None = None) -> Result:
    """Create inside an open transaction (`res_id`: an id pre-assigned by a transaction)."""
    access.check_new(call, "create", res_type, resource)
    if if_none_exist:
        existing = find_existing(conn, call, res_type, if_none_exist)
        if existing is not None:
            return Result(200, stored=existing, location=True)
    return _store_new(conn, call, resource, res_id=res_id)


def find_existing(conn, call: Call, res_type: str,  # type: ignore[no-untyped-def]
                  if_none_exist: str) -> StoredResource | None:
    """The single match of If-None-Exist criteria (None when none; 412 when several).
    Takes the criteria lock first so concurrent identical creates serialise."""
    params = parse_criteria(if_none_exist, what="If-None-Exist")
    lock_for_create(conn, res_type, params)
    ids = matching_ids(conn, call, res_type, params)
    if len(ids) > 1:
        raise FhirError(412, "multiple-matches",
                        "If-None-Exist matched more than one resource", "If-None-Exist")
    return Repository(conn).read(res_type, ids[0]) if ids else None


def _store_new(conn, call: Call, resource: dict, res_id: str | None = None,  # type: ignore[no-untyped-def]
               method: str = "POST") -> Result:
    resource["id"] = res_id or new_id()  # assigned before the phases: they see the final id
    event = WriteEvent(call, conn, "create", resource["resourceType"], resource["id"], None,
                       resource, issues=call.validation_warnings.pop(id(resource), []))
    resource = call.services.phases.before_write(event)
    assert resource is not None
    stored = Repository(conn).create(resource, res_id=resource["id"], method=method)
    call.services.phases.after_write(event, stored, None)
    return Result(201, stored=stored, issues=event.issues, location=True)


# -- read ------------------------------------------------------------------------------
def read(call: Call, res_type: str, res_id: str, *, if_none_match: str | None = None,
         if_modified_since_us: int | None = None, conn: Connection | None = None) -> Result:
    """GET [type]/[id], with If-None-Match / If-Modified-Since giving 304 (in its own read
    transaction, or on `conn`, a Bundle's)."""
    access.check_type(call, "read", res_type)
    with reading(call, conn) as c:
        stored = Repository(c).read(res_type, res_id)
        if stored is not None:
            access.check_existing(c, call, "read", stored)
        stored = live(stored, res_type, res_id)
    if if_none_match and _etag_matches(if_none_match, stored.version):
        return Result(304, stored=stored)
    if if_modified_since_us is not None and stored.last_updated // 1_000_000 <= (
        if_modified_since_us // 1_000_000
    ):
        return Result(304, stored=stored)
    return Result(200, stored=stored)


def parse_version(text: str) -> int | None:
    """A version id from a URL: ASCII digits that fit a 64-bit integer, else None."""
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        return None
    return int(text)


def vread(call: Call, res_type: str, res_id: str, version_text: str, *,
          conn: Connection | None = None) -> Result:
    """GET [type]/[id]/_history/[vid] (in its own read transaction, or on `conn`)."""
    version = parse_version(version_text)
    if version is None:
        raise FhirError(404, "not-found", f"Version '{version_text[:40]}' is not known",
                        f"{res_type}.meta.versionId")
    access.check_type(call, "vread", res_type)
    with reading(call, conn) as c:
        repo = Repository(c)
        current = repo.read(res_type, res_id)
        if current is None:
            raise FhirError(404, "not-found", f"Resource {res_type}/{res_id} is not known")
        stored = repo.vread(res_type, res_id, version)
        access.check_existing(c, call, "vread", stored or current)
        if stored is None:
            raise FhirError(404, "not-found", f"Version {version} of {res_type}/{res_id} "
                                              "is not known")
    if stored.deleted:
        raise FhirError(410, "deleted", f"Version {version} of {res_type}/{res_id} is a deletion")
    return Result(200, stored=stored)


def _etag_matches(header: str, version: int) -> bool:
    return any(parse_etag(tag) == version for tag in header.split(","))


def parse_etag(value: str) -> int | None:
    """`W/"3"` or `"3"` or `3` -> 3; None when not a version tag."""
    tag = value.strip()
    if tag.startswith("W/"):
        tag = tag[2:]
    tag = tag.strip('"')
    return parse_version(tag)


def require_etag(if_match: str | None) -> int | None:
    """Parse If-Match; a malformed one is a 400 (never silently ignored)."""
    if if_match is None:
        return None
    version = parse_etag(if_match)
    if version is None:
        raise FhirError(400, "invalid", f"Malformed If-Match '{if_match}'", "If-Match")
    return version


# -- update ----------------------------------------------------------------------------
def update(call: Call, res_type: str, res_id: str, resource: dict, *,
           if_match: str | None = None) -> Result:
    """PUT [type]/[id]: new version, or update-as-create with the client id."""
    check_valid(resource, res_type, res_id, call=call)
    expected = require_etag(if_match)
    with call.write() as conn:
        return committing(call, conn, store_update(conn, call, res_type, res_id, resource,
                                                   expected, "PUT"))


def store_update(conn, call: Call, res_type: str, res_id: str, resource: dict,  # type: ignore[no-untyped-def]
                  expected: int | None, method: str, *,
                  if_match: int | None | str = "same") -> Result:
    """Write a new version inside an open transaction. `expected`: the version the write is
    conditioned on (optimistic locking); `if_match`: the client's If-Match version, for the
    rules that require one (defaults to `expected`)."""
    repo = Repository(conn)
    current = repo.read(res_type, res_id)
    previous = current.resource() if current is not None and not current.deleted else None
    interaction = "update" if previous is not None else "create"
    if current is not None and method != "PATCH":  # PATCH checked its target already
        access.check_existing(conn, call, "update", current)
    access.check_new(call, interaction, res_type, resource)
    event = WriteEvent(call, conn, interaction, res_type, res_id, previous, resource,
                       if_match=expected if if_match == "same" else if_match,  # type: ignore[arg-type]
                       issues=call.validation_warnings.pop(id(resource), []))
    resource = call.services.phases.before_write(event)
    assert resource is not None
    stored, prev_stored = repo.update(resource, res_id, expected_version=expected, method=method)
    call.services.phases.after_write(event, stored, prev_stored)
    created = prev_stored is None or prev_stored.deleted
    return Result(201 if created else 200, stored=stored, issues=event.issues,
                  location=created)


def conditional_update(call: Call, res_type: str, query: str, resource: dict, *,
                       if_match: str | None = None) -> Result:
    """PUT [type]?criteria: 0 matches create (client id if given), 1 updates, >1 is 412."""
    check_valid(resource, res_type, call=call)
    expected = require_etag(if_match)
    with call.write() as conn:
        return committing(call, conn, conditional_update_in(conn, call, res_type, query,
                                                            resource, expected))


def conditional_update_in(conn, call: Call, res_type: str, query: str,  # type: ignore[no-untyped-def]
                          resource: dict, expected: int | None) -> Result:
    """Conditional update inside an open transaction."""
    params = parse_criteria(query, what="Conditional update")
    lock_for_create(conn, res_type, params)
    ids = matching_ids(conn, call, res_type, params)
    if len(ids) > 1:
        raise FhirError(412, "multiple-matches",
                        "Conditional update matched more than one resource")
    body_id = resource.get("id")
    if ids:
        if body_id is not None and body_id != ids[0]:
            raise FhirError(400, "invalid", f"Resource id '{body_id}' does not match the "
                            f"resource found by the criteria ({ids[0]})", f"{res_type}.id")
        resource["id"] = ids[0]
        return store_update(conn, call, res_type, ids[0], resource, expected, "PUT")
    if body_id is not None:
        existing = Repository(conn).read(res_type, body_id)
        if existing is not None and not existing.deleted:
            raise FhirError(409, "conflict", f"{res_type}/{body_id} exists but does not "
                            "match the criteria")
        return store_update(conn, call, res_type, body_id, resource, None, "PUT")
    return _store_new(conn, call, resource)


# -- patch -----------------------------------------------------------------------------
def patch(call: Call, res_type: str, res_id: str, operations: Any, *,
          if_match: str | None = None) -> Result:
    """PATCH [type]/[id] with a JSON Patch document."""
    expected = require_etag(if_match)
    with call.write() as conn:
        return committing(call, conn, patch_in(conn, call, res_type, res_id, operations,
                                               expected))


def patch_in(conn, call: Call, res_type: str, res_id: str, operations: Any,  # type: ignore[no-untyped-def]
             expected: int | None) -> Result:
    """Patch inside an open transaction."""
    access.check_type(call, "patch", res_type)
    current = Repository(conn).read(res_type, res_id)
    if current is not None:
        access.check_existing(conn, call, "patch", current)
    current = live(current, res_type, res_id)
    return _apply_patch(conn, call, current, operations, expected)


def conditional_patch(call: Call, res_type: str, query: str, operations: Any, *,
                      if_match: str | None = None) -> Result:
    """PATCH [type]?criteria: exactly one match is patched."""
    expected = require_etag(if_match)
    with call.write() as conn:
        res_id = single_match(conn, call, res_type, query, "patch")
        return committing(call, conn, patch_in(conn, call, res_type, res_id, operations,
                                               expected))


def single_match(conn, call: Call, res_type: str, query: str,  # type: ignore[no-untyped-def]
                 what: str) -> str:
    """The id of the one resource matching conditional criteria (404 none, 412 several)."""
    ids = matching_ids(conn, call, res_type,
                       parse_criteria(query, what=f"Conditional {what}"))
    if not ids:
        raise FhirError(404, "not-found", f"Conditional {what} matched no resource")
    if len(ids) > 1:
        raise FhirError(412, "multiple-matches",
                        f"Conditional {what} matched more than one resource")
    return ids[0]


def _apply_patch(conn, call: Call, current: StoredResource, operations: Any,  # type: ignore[no-untyped-def]
                 expected: int | None) -> Result:
    if expected is not None and expected != current.version:
        raise FhirError(412, "conflict", f"Version conflict: If-Match expects version "
                        f"{expected}, current version is {current.version}")
    if not isinstance(operations, list) or not all(isinstance(o, dict) for o in operations):
        raise FhirError(400, "invalid", "A JSON Patch body must be an array of operations")
    before = current.resource()
    try:
        patched = jsonpatch.JsonPatch(operations).apply(copy_tree(before))
    except jsonpatch.JsonPatchTestFailed as exc:
        raise FhirError(422, "processing", f"JSON Patch test failed: {exc}") from exc
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError,
            KeyError, ValueError) as exc:
        raise FhirError(400, "invalid", f"Invalid JSON Patch: {exc}") from exc
    if not isinstance(patched, dict):
        raise FhirError(422, "processing", "The patch did not produce a resource")
    if patched.get("resourceType") != current.res_type or patched.get("id") != current.res_id:
        raise FhirError(422, "processing", "A patch may not change resourceType or id",
                        f"{current.res_type}.id")
    try:
        check_tree(patched, BodyLimits(), current.res_type)
    except BodyError as exc:
        raise FhirError(422, "processing", f"The patched resource is not valid: {exc.message}",
                        exc.expression) from None
    meta = patched.get("meta")
    if isinstance(meta, dict):
        meta.pop("versionId", None)
    check_valid(patched, current.res_type, current.res_id, call=call)
    return store_update(conn, call, current.res_type, current.res_id, patched,
                         current.version, "PATCH", if_match=expected)


# -- delete ----------------------------------------------------------------------------
def delete(call: Call, res_type: str, res_id: str, *, if_match: str | None = None) -> Result:
    """DELETE [type]/[id]: a deletion version; history is kept. Idempotent."""
    expected = require_etag(if_match)
    with call.write() as conn:
        return committing(call, conn, delete_in(conn, call, res_type, res_id, expected))


def delete_in(conn, call: Call, res_type: str, res_id: str,  # type: ignore[no-untyped-def]
                  expected: int | None) -> Result:
    access.check_type(call, "delete", res_type)
    repo = Repository(conn)
    current = repo.read(res_type, res_id)
    if current is not None:
        access.check_existing(conn, call, "delete", current)
    event = WriteEvent(call, conn, "delete", res_type, res_id,
                       current.resource() if current is not None and not current.deleted
                       else None, None)
    if event.previous is not None:
        call.services.phases.before_write(event)
    stored, existed = repo.delete(res_type, res_id, expected_version=expected)
    if existed:
        assert stored is not None
        call.services.phases.after_write(event, stored, current)
    message = (f"Deleted {res_type}/{res_id}" if existed
               else f"{res_type}/{res_id} did not exist or was already deleted")
    return Result(200, stored=stored if existed else None,
                  issues=[Issue("information", "informational", message)])


def conditional_delete(call: Call, res_type: str, query: str) -> Result:
    """DELETE [type]?criteria: deletes the single match (412 when several match)."""
    with call.write() as conn:
        return committing(call, conn, conditional_delete_in(conn, call, res_type, query))


def conditional_delete_in(conn, call: Call, res_type: str, query: str) -> Result:  # type: ignore[no-untyped-def]
    """Conditional delete inside an open transaction (0 matches: nothing to do)."""
    ids = matching_ids(conn, call, res_type, parse_criteria(query, what="Conditional delete"))
    if len(ids) > 1:
        raise FhirError(412, "multiple-matches",
                        "Conditional delete matched more than one resource")
    if not ids:
        return Result(200, issues=[Issue("information", "informational",
                                         "No resource matched; nothing deleted")])
    return delete_in(conn, call, res_type, ids[0], None)
