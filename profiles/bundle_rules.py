"""Bundle integrity beyond the bdl-* invariants: fullUrl rules (absolute, a valid urn:uuid,
agreeing with the resource's type and id), references that must resolve inside document and
message Bundles, references that resolve to an entry of another type, urn:uuid references
that name no entry, and link relations from the IANA registry. References resolve as R4
"Resolving references in Bundles" says: absolute and urn references by fullUrl, relative
ones against the base of the referring entry's fullUrl."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from fhir_server.errors import Issue
from profiles.r4model import REL_REF as _RELATIVE

_ABSOLUTE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
_UUID = re.compile(r"^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_OID = re.compile(r"^urn:oid:[0-2](\.(0|[1-9][0-9]*))+$")
RESTFUL_URL = re.compile(r"^(https?://.+)/([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})"
                      r"(/_history/[A-Za-z0-9\-.]{1,64})?$")

# IANA link relation types (https://www.iana.org/assignments/link-relations), lower case.
LINK_RELATIONS = frozenset("""
about acl alternate amphtml api-catalog appendix apple-touch-icon apple-touch-startup-image
archives author blocked-by bookmark c2pa-manifest canonical chapter cite-as collection
compression-dictionary contents convertedfrom copyright create-form current deprecation
describedby describes disclosure dns-prefetch duplicate edit edit-form edit-media enclosure
external first geofeed glossary help hosts hub ice-server icon index intervalafter
intervalbefore intervalcontains intervaldisjoint intervalduring intervalequals
intervalfinishedby intervalfinishes intervalin intervalmeets intervalmetby intervaloverlappedby
intervaloverlaps intervalstartedby intervalstarts item last latest-version license linkset
lrdd manifest mask-icon me media-feed memento micropub modulepreload monitor monitor-group
next next-archive nofollow noopener noreferrer opener openid2.local_id openid2.provider
original p3pv1 payment pingback preconnect predecessor-version prefetch preload prerender
prev prev-archive preview previous privacy-policy profile publication related replies
restconf ruleinput search section self service service-desc service-doc service-meta
sip-trunking-route sponsored start status stylesheet subsection successor-version sunset tag
terms-of-service timegate timemap type ugc up version-history via webmention working-copy
working-copy-of
""".split())


class BundleIndex:
    """Entries of a Bundle by fullUrl, and each entry resource's own fullUrl."""

    def __init__(self, bundle: dict[str, Any]) -> None:
        self.by_url: dict[str, dict] = {}
        self.by_identity: dict[tuple[str, str], dict] = {}
        self.url_of: dict[int, str] = {}
        for entry in bundle.get("entry") or []:
            if not isinstance(entry, dict):
                continue
            resource = entry.get("resource")
            full_url = entry.get("fullUrl")
            if not isinstance(resource, dict):
                continue
            if isinstance(full_url, str):
                self.by_url.setdefault(full_url, resource)
                self.url_of[id(resource)] = full_url
            rtype, rid = resource.get("resourceType"), resource.get("id")
            if isinstance(rtype, str) and isinstance(rid, str):
                self.by_identity.setdefault((rtype, rid), resource)

    def resolve(self, ref: str, source: dict | None = None) -> dict | None:
        """The entry resource `ref` names, read from the entry holding `source`."""
        if ref in self.by_url:
            return self.by_url[ref]
        m = RESTFUL_URL.match(ref)
        if m and m.group(4):
            return self.by_url.get(ref[: -len(m.group(4))])
        rel = _RELATIVE.match(ref)
        if rel is None:
            return None
        source_url = self.url_of.get(id(source)) if source is not None else None
        base = RESTFUL_URL.match(source_url) if source_url else None
        if base is not None:
            return self.by_url.get(f"{base.group(1)}/{rel.group(1)}/{rel.group(2)}")
        return self.by_identity.get((rel.group(1), rel.group(2)))


def bundle_issues(bundle: dict[str, Any], expr: str, index: BundleIndex) -> list[Issue]:
    """Integrity issues of one Bundle (its entries' resources are validated separately)."""
    issues: list[Issue] = []
    kind = bundle.get("type")
    entries = bundle.get("entry") if isinstance(bundle.get("entry"), list) else []
    for i, link in enumerate(bundle.get("link") or []):
        issues.extend(_link_issues(link, f"{expr}.link[{i}]"))
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue
        where = f"{expr}.entry[{i}]"
        for j, link in enumerate(entry.get("link") or []):
            issues.extend(_link_issues(link, f"{where}.link[{j}]"))
        issues.extend(full_url_issues(entry, where))
        resource = entry.get("resource")
        if not isinstance(resource, dict):
            continue
        must_resolve = (kind == "document" and i == 0) or \
            (kind == "message" and i == 0 and resource.get("resourceType") == "MessageHeader")
        for path, ref in _references(resource, f"{where}.resource"):
            issues.extend(_reference_issues(index, resource, ref, path, kind, must_resolve,
                                            message_focus=kind == "message"))
    return issues


def _link_issues(link: Any, where: str) -> list[Issue]:
    relation = link.get("relation") if isinstance(link, dict) else None
    if isinstance(relation, str) and relation.lower() not in LINK_RELATIONS:
        return [Issue("error", "value", f"'{relation}' is not a registered link relation "
                      "type (IANA link relations)", [f"{where}.relation"])]
    return []


def full_url_issues(entry: dict[str, Any], where: str) -> list[Issue]:
    """fullUrl of one entry: absolute, a valid urn:uuid / urn:oid, and naming the resource
    it holds when it is a RESTful URL."""
    full_url = entry.get("fullUrl")
    if not isinstance(full_url, str):
        return []
    at = [f"{where}.fullUrl"]
    if not _ABSOLUTE.match(full_url):
        return [Issue("error", "value", f"fullUrl '{full_url}' must be an absolute URI "
                      "(http(s) URL, urn:uuid or urn:oid)", at)]
    if full_url.startswith("urn:uuid:") and not _UUID.match(full_url):
        return [Issue("error", "value", f"fullUrl '{full_url}' is not a valid urn:uuid "
                      "(lower-case UUID)", at)]
    if full_url.startswith("urn:oid:") and not _OID.match(full_url):
        return [Issue("error", "value", f"fullUrl '{full_url}' is not a valid urn:oid", at)]
    resource = entry.get("resource")
    m = RESTFUL_URL.match(full_url)
    if m and isinstance(resource, dict) and not m.group(4):
        rtype, rid = resource.get("resourceType"), resource.get("id")
        if isinstance(rid, str) and (m.group(2), m.group(3)) != (rtype, rid):
            return [Issue("error", "invalid", f"fullUrl '{full_url}' does not match the "
                          f"resource it holds ({rtype}/{rid})", at)]
    return []


def _reference_issues(index: BundleIndex, resource: dict, ref: str, path: str,
                      kind: Any, must_resolve: bool, message_focus: bool) -> list[Issue]:
    if ref.startswith("#") or "?" in ref:
        return []
    found = index.resolve(ref, resource)
    if found is None:
        required = must_resolve and (not message_focus or ".focus" in path)
        if required:
            what = "document" if kind == "document" else "message"
            return [Issue("error", "not-found", f"Reference '{ref}' must resolve to an entry "
                          f"of the {what} Bundle", [path])]
        if ref.startswith(("urn:uuid:", "urn:oid:")) and kind not in ("transaction",
                                                                       "batch"):
            return [Issue("warning", "not-found", f"Reference '{ref}' names no entry of this "
                          "Bundle", [path])]
        return []
    named = _RELATIVE.match(ref) or RESTFUL_URL.match(ref)
    expected = named.group(1) if named and _RELATIVE.match(ref) else (
        named.group(2) if named else None)
    actual = found.get("resourceType")
    if expected and actual != expected:
        return [Issue("error", "invalid", f"Reference '{ref}' resolves to an entry holding a "
                      f"{actual}", [path])]
    return []


def _references(node: Any, path: str) -> Iterator[tuple[str, str]]:
    """(FHIRPath of the Reference, reference string) for every literal reference."""
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str):
            yield path, ref
        for key, value in node.items():
            if key in ("contained", "resource") and path.endswith("resource"):
                continue
            if isinstance(value, (dict, list)):
                yield from _references(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            if isinstance(value, (dict, list)):
                yield from _references(value, f"{path}[{i}]")
