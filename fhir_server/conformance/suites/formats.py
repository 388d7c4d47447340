"""JSON and XML for reads, searches and a create (task-5: servers SHALL support both)."""

from __future__ import annotations

import xml.etree.ElementTree as ET  # noqa: N817  (responses come from the server under test)

from fhir_server.conformance import resources as fx
from fhir_server.conformance.context import TestContext
from fhir_server.conformance.http import FHIR_JSON, FHIR_XML, Response, ref_of
from fhir_server.conformance.model import TestCase
from fhir_server.conformance.requirements import ig, spec

GROUP = "formats"
NS = "{http://hl7.org/fhir}"


def parse_xml(t: TestContext, resp: Response, what: str) -> ET.Element | None:
    """The response as FHIR XML, or None (with a finding)."""
    if not t.check(resp.status == 200, f"{what}: HTTP {resp.status}"):
        return None
    t.check("xml" in resp.content_type, f"{what}: Content-Type is {resp.content_type!r}")
    try:
        root = ET.fromstring(resp.text)
    except ET.ParseError as exc:
        t.check(False, f"{what}: the body is not well-formed XML ({exc})")
        return None
    t.check(root.tag.startswith(NS), f"{what}: root element {root.tag} is not in the FHIR "
                                     "namespace")
    return root


def _value(el: ET.Element | None, child: str) -> str | None:
    found = el.find(f"{NS}{child}") if el is not None else None
    return found.get("value") if found is not None else None


def _xml_read(t: TestContext) -> None:
    _sr, task = t.data.referral()
    for how, kw in (("Accept: application/fhir+xml", {"accept": FHIR_XML}),
                    ("_format=xml", {"params": {"_format": "xml"}, "accept": "*/*"})):
        root = parse_xml(t, t.client().get(f"Task/{task['id']}", **kw), f"read with {how}")
        if root is not None:
            t.check(root.tag == f"{NS}Task", f"read with {how}: root is {root.tag}, not Task")
            t.check(_value(root, "id") == task["id"], f"read with {how}: id differs")
            t.check(_value(root, "status") == task["status"] or root.tag != f"{NS}Task",
                    f"read with {how}: status differs from the JSON read")


def _xml_search(t: TestContext) -> None:
    _sr, task = t.data.referral()
    root = parse_xml(t, t.client().get("Task", params={"_id": task["id"]}, accept=FHIR_XML),
                     "search Task?_id in XML")
    if root is None:
        return
    t.require(root.tag == f"{NS}Bundle", f"search in XML: root is {root.tag}, not Bundle")
    t.check(_value(root, "type") == "searchset", "search in XML: Bundle.type is not searchset")
    ids = [_value(e.find(f"{NS}resource/{NS}Task"), "id") for e in root.findall(f"{NS}entry")]
    t.check(task["id"] in ids, f"search in XML: Task/{task['id']} is not among the entries")


def _json(t: TestContext) -> None:
    _sr, task = t.data.referral()
    for how, kw in (("Accept: application/fhir+json", {"accept": FHIR_JSON}),
                    ("_format=json", {"params": {"_format": "json"}, "accept": "*/*"})):
        resp = t.client().get(f"Task/{task['id']}", **kw)
        t.check(resp.status == 200 and "json" in resp.content_type,
                f"read with {how}: HTTP {resp.status}, Content-Type {resp.content_type!r}")
        body = resp.json()
        t.check(isinstance(body, dict) and body.get("id") == task["id"],
                f"read with {how}: not the Task as JSON")
    resp = t.client().get("Task", params={"_id": task["id"]}, accept=FHIR_JSON)
    body = resp.json()
    t.check(isinstance(body, dict) and body.get("resourceType") == "Bundle",
            "search Task?_id in JSON did not return a Bundle")


def _xml_create(t: TestContext) -> None:
    body = fx.xml_patient(t.data.run_id)
    resp = t.client().request("POST", "Patient", data=body, accept=FHIR_JSON,
                              headers={"Content-Type": FHIR_XML,
                                       "Prefer": "return=representation"})
    t.require(resp.status in (200, 201), f"creating a Patient sent as XML: HTTP {resp.status}")
    created = resp.json()
    if isinstance(created, dict) and created.get("id"):
        t.data.created.append(("source", ref_of(created)))
        ident = (created.get("identifier") or [{}])[0].get("value", "")
        t.check(ident.endswith("-xml-patient"), "the Patient created from XML lost its "
                                                "identifier")
        t.check((created.get("name") or [{}])[0].get("family") == "Kitxml",
                "the Patient created from XML lost its name")


def tests(actor: str) -> list[TestCase]:
    task5 = ig("task-5")
    fmt = spec("fhir-formats")
    return [
        TestCase("formats.json", "Reads and searches in JSON (Accept and _format)", GROUP,
                 "SHALL", (task5, fmt), _json),
        TestCase("formats.xml-read", "A referral Task read as XML (Accept and _format)",
                 GROUP, "SHALL", (task5, fmt), _xml_read),
        TestCase("formats.xml-search", "A Task search answered as an XML Bundle", GROUP,
                 "SHALL", (task5, fmt), _xml_search),
        TestCase("formats.xml-create", "A resource sent as XML is created", GROUP, "SHALL",
                 (task5, fmt), _xml_create),
    ]
