"""FHIR XML format layer: round trips, element order, hostile input, content negotiation."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from lxml import etree

from fhir_server.errors import FhirError
from fhir_server.formats import (
    FhirDecimal,
    json_default,
    json_to_xml,
    request_format,
    response_format,
    xml_to_json,
)
from fhir_server.formats.model import ATTR, COMPLEX, FHIR_NS, PRIMITIVE, RESOURCE, XHTML, model
from tests.reference_data import GRAVITY_EXAMPLES
from tests.reference_data import QUESTIONNAIRES as QUESTIONNAIRE_DIR
from tests.reference_data import SUBSCRIPTIONS as SUBSCRIPTION_DIR

REPO = Path(__file__).resolve().parents[1]
MAX = 10 * 1024 * 1024
F = f"{{{FHIR_NS}}}"
XHTML_NS = "http://www.w3.org/1999/xhtml"

GRAVITY = sorted(GRAVITY_EXAMPLES.glob("*.json"))
QUESTIONNAIRES = sorted(QUESTIONNAIRE_DIR.glob("*.json"))
# R4 fixtures only: the r4b folder holds an R4B SubscriptionTopic, not an R4 resource.
SUBSCRIPTIONS = sorted(
    p for p in SUBSCRIPTION_DIR.rglob("*.json") if "r4b" not in p.parts)
OWN_EXAMPLES = sorted(p for p in (REPO / "examples").rglob("*.json")
                      if b'"resourceType"' in p.read_bytes()[:200])


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8-sig"))


def fixed(path: Path, resource: dict) -> dict:
    """Known source defects: the LHC-Forms PHQ-9 writes a Duration value as the string "1"."""
    if path.name.startswith("phq9.lhcforms"):
        for item in resource.get("item", []):
            for ext in item.get("extension", []):
                duration = ext.get("valueDuration")
                if duration and isinstance(duration.get("value"), str):
                    duration["value"] = int(duration["value"])
    return resource


def round_trip(resource: dict) -> dict:
    return xml_to_json(json_to_xml(resource), max_bytes=MAX)


def test_fixture_counts() -> None:
    assert len(GRAVITY) == 58
    assert len(QUESTIONNAIRES) == 8
    assert len(SUBSCRIPTIONS) >= 20


@pytest.mark.parametrize("path", GRAVITY + QUESTIONNAIRES + SUBSCRIPTIONS + OWN_EXAMPLES,
                         ids=lambda p: p.name)
def test_round_trip_is_lossless(path: Path) -> None:
    resource = fixed(path, load(path))
    back = round_trip(resource)
    assert back == resource
    # ... also through orjson (the storage encoder) with the decimal hook.
    assert orjson.loads(orjson.dumps(back, default=json_default)) == resource
    # Exact lexical decimals: parse the source keeping decimal text, compare the bytes.
    exact = fixed(path, json.loads(path.read_text(encoding="utf-8-sig"),
                                   parse_float=FhirDecimal))
    sort = orjson.OPT_SORT_KEYS
    assert orjson.dumps(round_trip(exact), default=json_default, option=sort) == orjson.dumps(
        exact, default=json_default, option=sort)


def test_invalid_source_value_is_an_error_not_dropped() -> None:
    path = QUESTIONNAIRE_DIR / "phq9.lhcforms.R4.questionnaire.json"
    with pytest.raises(FhirError) as err:
        json_to_xml(load(path))
    assert err.value.status == 500
    assert err.value.issues[0].expression == [
        "Questionnaire.item[0].extension[2].valueDuration.value"]


TASK = {
    # keys deliberately out of specification order
    "status": "requested",
    "for": {"reference": "Patient/p1"},
    "intent": "order",
    "meta": {"profile": ["http://example.org/p"], "lastUpdated": "2024-01-01T00:00:00Z"},
    "id": "t1",
    "resourceType": "Task",
    "code": {"text": "Fulfill", "coding": [{"code": "fulfill", "system": "http://s"}]},
    "input": [{"valueString": "x", "type": {"text": "note"}}],
}
TASK_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<Task xmlns="http://hl7.org/fhir"><id value="t1"/>'
    '<meta><lastUpdated value="2024-01-01T00:00:00Z"/><profile value="http://example.org/p"/>'
    "</meta>"
    '<status value="requested"/><intent value="order"/>'
    '<code><coding><system value="http://s"/><code value="fulfill"/></coding>'
    '<text value="Fulfill"/></code>'
    '<for><reference value="Patient/p1"/></for>'
    '<input><type><text value="note"/></type><valueString value="x"/></input></Task>'
)

OBSERVATION = {
    "resourceType": "Observation",
    "valueQuantity": {"unit": "{score}", "value": 12, "system": "http://unitsofmeasure.org"},
    "subject": {"reference": "Patient/p1"},
    "code": {"coding": [{"system": "http://loinc.org", "code": "44261-6"}]},
    "status": "final",
    "effectiveDateTime": "2024-02-03",
    "extension": [{"valueBoolean": True, "url": "http://e"}],
    "id": "o1",
}
OBSERVATION_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<Observation xmlns="http://hl7.org/fhir"><id value="o1"/>'
    '<extension url="http://e"><valueBoolean value="true"/></extension>'
    '<status value="final"/>'
    '<code><coding><system value="http://loinc.org"/><code value="44261-6"/></coding></code>'
    '<subject><reference value="Patient/p1"/></subject>'
    '<effectiveDateTime value="2024-02-03"/>'
    '<valueQuantity><value value="12"/><unit value="{score}"/>'
    '<system value="http://unitsofmeasure.org"/></valueQuantity></Observation>'
)


@pytest.mark.parametrize(("resource", "expected"), [(TASK, TASK_XML),
                                                     (OBSERVATION, OBSERVATION_XML)])
def test_element_order_matches_specification(resource: dict, expected: str) -> None:
    assert json_to_xml(resource).decode() == expected
    assert xml_to_json(expected.encode(), max_bytes=MAX) == resource


def test_primitive_extensions_and_null_placeholders() -> None:
    patient = {
        "resourceType": "Patient",
        "name": [{
            "given": ["Ann", None, "Cy"],
            "_given": [None, {"id": "g2", "extension": [
                {"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                 "valueCode": "masked"}]}, None],
        }],
        "_birthDate": {"extension": [
            {"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
             "valueCode": "unknown"}]},
        "_gender": {"id": "gx"},
        "gender": "female",
    }
    xml = json_to_xml(patient).decode()
    assert '<given value="Ann"/><given id="g2"><extension url="http://hl7.org/fhir/' in xml
    assert '<given value="Cy"/>' in xml
    assert '<gender id="gx" value="female"/>' in xml
    assert '<birthDate><extension url=' in xml
    assert round_trip(patient) == patient


def test_only_extensions_on_a_repeating_primitive() -> None:
    resource = {"resourceType": "Patient", "name": [{"_given": [{"id": "a"}, {"id": "b"}]}]}
    assert round_trip(resource) == resource


def test_arrays_follow_max_cardinality() -> None:
    xml = (b'<Patient xmlns="http://hl7.org/fhir"><name><given value="A"/></name>'
           b'<active value="true"/></Patient>')
    assert xml_to_json(xml, max_bytes=MAX) == {
        "resourceType": "Patient", "name": [{"given": ["A"]}], "active": True}


def test_contained_resources_and_narrative() -> None:
    resource = {
        "resourceType": "ServiceRequest",
        "id": "sr",
        "text": {"status": "generated",
                 "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p>Refer &amp; <b>follow'
                        '</b><br/></p><td></td><a title="line\nbreak"> </a></div>'},
        "contained": [{"resourceType": "Organization", "id": "o", "name": "Clinic"},
                      {"resourceType": "Patient", "id": "p", "active": False}],
        "status": "active", "intent": "order",
        "subject": {"reference": "#p"},
        "performer": [{"reference": "#o"}],
    }
    xml = json_to_xml(resource)
    root = etree.fromstring(xml)
    contained = root.findall(f"{F}contained")
    assert [c[0].tag for c in contained] == [f"{F}Organization", f"{F}Patient"]
    div = root.find(f"{F}text/{{{XHTML_NS}}}div")
    assert div is not None and div.find(f"{{{XHTML_NS}}}p/{{{XHTML_NS}}}b").text == "follow"
    assert round_trip(resource) == resource


def test_narrative_with_prefix_and_html_entities() -> None:
    xml = (b'<Patient xmlns="http://hl7.org/fhir" xmlns:h="http://www.w3.org/1999/xhtml">'
           b'<text><status value="generated"/><h:div><h:p>x</h:p></h:div></text></Patient>')
    got = xml_to_json(xml, max_bytes=MAX)
    assert got["text"]["div"] == '<div xmlns="http://www.w3.org/1999/xhtml"><p>x</p></div>'
    # HTML named entities are not XML; they become characters rather than failing.
    resource = {"resourceType": "Patient", "text": {
        "status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">a&nbsp;b</div>'}}
    assert round_trip(resource)["text"]["div"] == (
        '<div xmlns="http://www.w3.org/1999/xhtml">a&#160;b</div>')


def test_bundle_with_nested_resources() -> None:
    bundle = {
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Patient", "active": True},
             "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Bundle", "type": "collection", "entry": [
                {"resource": {"resourceType": "Task", "status": "draft", "intent": "order"}}]},
             "request": {"method": "PUT", "url": "Bundle/b"}},
        ],
    }
    xml = json_to_xml(bundle).decode()
    assert ('<entry><fullUrl value="urn:uuid:1"/><resource><Patient><active value="true"/>'
            '</Patient></resource><request><method value="POST"/>') in xml
    assert round_trip(bundle) == bundle


def test_parameters_with_resources_and_parts() -> None:
    params = {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": {"resourceType": "OperationOutcome",
                                          "issue": [{"severity": "error", "code": "invalid"}]}},
        {"name": "score", "valueDecimal": 0.5},
        {"name": "nested", "part": [{"name": "flag", "valueBoolean": False},
                                    {"name": "n", "valueInteger": -3}]},
    ]}
    assert round_trip(params) == params


def test_decimals_keep_their_lexical_form() -> None:
    xml = (b'<Parameters xmlns="http://hl7.org/fhir">'
           b'<parameter><name value="a"/><valueDecimal value="0.10"/></parameter>'
           b'<parameter><name value="b"/><valueDecimal value="1e-3"/></parameter>'
           b'<parameter><name value="c"/><valueDecimal value="12345678901234567890.5"/>'
           b'</parameter>'
           b'<parameter><name value="d"/><valueDecimal value="25000"/></parameter>'
           b'<parameter><name value="e"/><valueInteger value="7"/></parameter>'
           b'</Parameters>')
    got = xml_to_json(xml, max_bytes=MAX)
    values = [c.get("valueDecimal", c.get("valueInteger")) for c in got["parameter"]]
    assert [type(v) for v in values] == [FhirDecimal, FhirDecimal, FhirDecimal, int, int]
    assert values[0] == 0.1 and values[1] == 0.001 and values[3] == 25000
    encoded = orjson.dumps(got, default=json_default)
    assert b'"valueDecimal":0.10}' in encoded and b'"valueDecimal":1e-3}' in encoded
    assert b'"valueDecimal":12345678901234567890.5}' in encoded
    assert Decimal(json.loads(encoded, parse_float=Decimal)["parameter"][2]["valueDecimal"]) == \
        Decimal("12345678901234567890.5")
    # and back to XML, byte for byte
    assert json_to_xml(got).split(b"\n", 1)[1] == xml
    with pytest.raises(TypeError):
        orjson.dumps(got)  # without the hook orjson refuses instead of losing digits
    # plain floats use the shortest round-tripping text; Decimal keeps its own
    quantity = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                "valueQuantity": {"value": 1e-3}}
    assert b'<value value="0.001"/>' in json_to_xml(quantity)
    quantity["valueQuantity"]["value"] = Decimal("0.10")
    assert b'<value value="0.10"/>' in json_to_xml(quantity)
    assert copy.deepcopy(values[0]).text == "0.10"


@pytest.mark.parametrize(("resource", "expression"), [
    ({"resourceType": "Patient", "colour": "blue"}, "Patient.colour"),
    ({"resourceType": "Patient", "name": [{"given": [1]}]}, "Patient.name[0].given[0]"),
    ({"resourceType": "Patient", "active": "yes"}, "Patient.active"),
    ({"resourceType": "Patient", "name": {"family": "x"}}, "Patient.name"),
    ({"resourceType": "Patient", "contained": [{"resourceType": "Nope"}]},
     "Patient.contained[0]"),
    ({"resourceType": "Patient", "deceasedBoolean": True, "deceasedDateTime": "2020"},
     "Patient.deceasedDateTime"),
    ({"resourceType": "Patient", "text": {"status": "generated", "div": "<p>no</p>"}},
     "Patient.text.div"),
    ({"resourceType": "Patient", "_active": {"foo": 1}}, "Patient.active.foo"),
])
def test_unknown_or_mistyped_content_is_an_error(resource: dict, expression: str) -> None:
    with pytest.raises(FhirError) as err:
        json_to_xml(resource)
    assert err.value.status == 500
    assert err.value.issues[0].expression == [expression]


# ---------------------------------------------------------------- hostile and invalid XML

PATIENT_OPEN = b'<Patient xmlns="http://hl7.org/fhir">'
HOSTILE = {
    "xxe-file": b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                b'<Patient xmlns="http://hl7.org/fhir"><id value="&x;"/></Patient>',
    "xxe-http": b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY x SYSTEM "http://127.0.0.1:9/x">]>'
                b'<Patient xmlns="http://hl7.org/fhir"><id value="&x;"/></Patient>',
    "xxe-parameter-entity": b'<!DOCTYPE p [<!ENTITY % r SYSTEM "http://127.0.0.1:9/e.dtd"> %r;]>'
                            b'<Patient xmlns="http://hl7.org/fhir"/>',
    "billion-laughs": b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
                      + b"".join(b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1)) * 10
                                                             if i > 1 else b"&lol;" * 10)
                                 for i in range(1, 10))
                      + b']><Patient xmlns="http://hl7.org/fhir"><id value="&lol9;"/></Patient>',
    "doctype-only": b'<!DOCTYPE Patient><Patient xmlns="http://hl7.org/fhir"/>',
    "external-dtd": b'<!DOCTYPE Patient SYSTEM "file:///etc/passwd">'
                    b'<Patient xmlns="http://hl7.org/fhir"/>',
    "utf16-doctype": '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE p [<!ENTITY x "y">]>'
                     '<Patient xmlns="http://hl7.org/fhir"><id value="&x;"/></Patient>'
                     .encode("utf-16"),
    "undeclared-entity": PATIENT_OPEN + b'<id value="&x;"/></Patient>',
    "xinclude": PATIENT_OPEN + b'<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" '
                               b'href="file:///etc/passwd"/></Patient>',
    "deep-nesting": PATIENT_OPEN + b"<a>" * 10_000 + b"</a>" * 10_000 + b"</Patient>",
    "deep-fhir-nesting": b'<Questionnaire xmlns="http://hl7.org/fhir">' + b"<item>" * 200
                         + b"</item>" * 200 + b"</Questionnaire>",
    "huge-attribute": PATIENT_OPEN + b'<id value="' + b"a" * (11 * 1024 * 1024) + b'"/></Patient>',
    "malformed": PATIENT_OPEN + b"<id value='x'></Patient>",
    "not-xml": b'{"resourceType": "Patient"}',
    "empty": b"   ",
    "non-fhir-namespace": b'<Patient xmlns="http://example.org/fhir"><id value="x"/></Patient>',
    "no-namespace": b'<Patient><id value="x"/></Patient>',
    "unknown-resource": b'<Dragon xmlns="http://hl7.org/fhir"/>',
    "unknown-element": PATIENT_OPEN + b'<colour value="blue"/></Patient>',
    "unknown-attribute": PATIENT_OPEN + b'<active value="true" colour="x"/></Patient>',
    "id-attribute-on-resource": b'<Patient xmlns="http://hl7.org/fhir" id="x"/>',
    "text-content": PATIENT_OPEN + b"<active>true</active></Patient>",
    "bad-boolean": PATIENT_OPEN + b'<active value="yes"/></Patient>',
    "bad-integer": PATIENT_OPEN + b'<multipleBirthInteger value="1.5"/></Patient>',
    "repeated-singleton": PATIENT_OPEN + b'<active value="true"/><active value="false"/></Patient>',
    "two-choice-types": PATIENT_OPEN + b'<deceasedBoolean value="true"/>'
                                       b'<deceasedDateTime value="2020"/></Patient>',
    "empty-primitive": PATIENT_OPEN + b"<active/></Patient>",
    "fhir-div": PATIENT_OPEN + b'<text><status value="generated"/><div/></text></Patient>',
    "two-contained": PATIENT_OPEN + b"<contained><Patient/><Patient/></contained></Patient>",
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_or_invalid_xml_is_refused(name: str) -> None:
    data = HOSTILE[name]
    max_bytes = 20 * 1024 * 1024
    with pytest.raises(FhirError) as err:
        xml_to_json(data, max_bytes=max_bytes)
    exc = err.value
    assert exc.status == 400
    assert exc.outcome()["resourceType"] == "OperationOutcome"
    assert exc.diagnostics and "root:" not in exc.diagnostics  # never file contents
    if name.startswith(("xxe", "billion", "doctype", "external", "utf16")):
        assert "DOCTYPE" in exc.diagnostics
    if name.startswith(("deep", "huge")):
        assert exc.code == "too-costly"


def test_oversized_document_is_refused_before_parsing() -> None:
    data = PATIENT_OPEN + b'<id value="x"/>' + b" " * 2000 + b"</Patient>"
    with pytest.raises(FhirError) as err:
        xml_to_json(data, max_bytes=1000)
    assert err.value.status == 400 and err.value.code == "too-costly"
    assert "limit is 1000 bytes" in err.value.diagnostics


def test_invalid_xml_errors_carry_a_fhirpath_expression() -> None:
    data = (b'<Bundle xmlns="http://hl7.org/fhir"><type value="batch"/><entry><resource>'
            b'<Patient><name><colour value="x"/></name></Patient></resource></entry></Bundle>')
    with pytest.raises(FhirError) as err:
        xml_to_json(data, max_bytes=MAX)
    assert err.value.issues[0].expression == ["Bundle.entry[0].resource.name[0].colour"]


def test_lenient_about_comments_schema_location_and_encodings() -> None:
    data = ('<?xml version="1.0" encoding="UTF-16"?><!-- note -->'
            '<Patient xmlns="http://hl7.org/fhir" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            'xsi:schemaLocation="http://hl7.org/fhir patient.xsd">'
            '<active value="true"/><!-- c --><gender value="other"/>\n</Patient>')
    assert xml_to_json(data.encode("utf-16"), max_bytes=MAX) == {
        "resourceType": "Patient", "active": True, "gender": "other"}


# ----------------------------------------------------- structure rules of generated XML

def check_structure(el: etree._Element, table_key: str, depth: int = 0) -> int:
    """Assert the FHIR XML rules on an element; return the number of elements checked."""
    m = model()
    table = m.tables[table_key]
    assert el.text is None, f"text content in {el.tag}"
    for attr in el.attrib:
        assert table.get(attr) is not None and table[attr].kind == ATTR, attr
    last_order = -1
    count = 1
    for child in el:
        assert child.tail is None
        name = etree.QName(child).localname
        f = table[name]
        assert f.order >= last_order, f"{name} out of order in {table_key}"
        last_order = f.order
        count += 1
        if f.kind == XHTML:
            assert child.tag == f"{{{XHTML_NS}}}div"
            continue
        assert child.tag == F + name
        if f.kind == PRIMITIVE:
            assert set(child.attrib) <= {"value", "id"}
            assert "value" in child.attrib or len(child), f"empty primitive {name}"
            for ext in child:
                assert ext.tag == F + "extension"
                count += check_structure(ext, "Extension", depth + 1)
        elif f.kind == COMPLEX:
            count += check_structure(child, f.type, depth + 1)
        elif f.kind == RESOURCE:
            assert len(child) == 1 and not child.attrib
            count += check_structure(child[0], etree.QName(child[0]).localname, depth + 1)
    return count


@pytest.mark.parametrize("path", GRAVITY[::6] + SUBSCRIPTIONS[:4], ids=lambda p: p.name)
def test_generated_xml_follows_the_structure_rules(path: Path) -> None:
    root = etree.fromstring(json_to_xml(load(path)))
    assert root.nsmap == {None: FHIR_NS}
    assert check_structure(root, etree.QName(root).localname) > 5


# ------------------------------------------------------------------ content negotiation

@pytest.mark.parametrize(("accept", "fmt", "expected"), [
    (None, None, "json"),
    ("", None, "json"),
    ("*/*", None, "json"),
    ("application/fhir+json", None, "json"),
    ("application/json", None, "json"),
    ("application/fhir+xml", None, "xml"),
    ("application/xml", None, "xml"),
    ("text/xml", None, "xml"),
    ("application/fhir+xml;fhir-version=4.0", None, "xml"),
    ("application/fhir+xml; fhir-version=4.0.1; charset=utf-8", None, "xml"),
    ("application/fhir+json;q=0.5, application/fhir+xml", None, "xml"),
    ("application/fhir+xml;q=0.4, application/fhir+json;q=0.9", None, "json"),
    ("application/fhir+json;q=0, */*", None, "json"),
    ("application/fhir+json;q=0, application/*;q=0.1, text/xml;q=0.2", None, "xml"),
    ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", None, "xml"),
    ("application/fhir+xml;fhir-version=3.0, application/fhir+json", None, "json"),
    ("APPLICATION/FHIR+XML", None, "xml"),
    ("application/fhir+xml", "json", "json"),
    (None, "xml", "xml"),
    ("application/fhir+json", "xml", "xml"),
    (None, "text/xml", "xml"),
    (None, "application/fhir+xml", "xml"),
    (None, "application/fhir xml", "xml"),  # '+' decoded to a space in the query string
    (None, "application/xml", "xml"),
    (None, "json", "json"),
    (None, "application/json", "json"),
    (None, "text/json", "json"),
    (None, "application/fhir+xml;fhir-version=4.0", "xml"),
    ("text/html", "json", "json"),
])
def test_response_format(accept: str | None, fmt: str | None, expected: str) -> None:
    assert response_format(accept, fmt) == expected


@pytest.mark.parametrize(("accept", "fmt"), [
    ("text/html", None),
    ("application/pdf, image/png", None),
    ("application/fhir+json;q=0", None),
    ("application/fhir+xml;fhir-version=5.0", None),
    (None, "turtle"),
    (None, "html"),
    (None, "application/fhir+json;fhir-version=3.0"),
])
def test_response_format_not_acceptable(accept: str | None, fmt: str | None) -> None:
    with pytest.raises(FhirError) as err:
        response_format(accept, fmt)
    assert err.value.status == 406 and err.value.code == "not-supported"


@pytest.mark.parametrize(("content_type", "expected"), [
    (None, "json"),
    ("application/fhir+json", "json"),
    ("application/fhir+json; charset=UTF-8", "json"),
    ("application/json", "json"),
    ("application/fhir+xml", "xml"),
    ("application/xml;charset=utf-8", "xml"),
    ("text/xml", "xml"),
    ("application/fhir+xml;fhir-version=4.0", "xml"),
    ("application/json-patch+json", "json-patch"),
])
def test_request_format(content_type: str | None, expected: str) -> None:
    assert request_format(content_type) == expected


@pytest.mark.parametrize("content_type", [
    "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
    "application/fhir+json; charset=iso-8859-1", "application/fhir+xml;fhir-version=3.0",
])
def test_request_format_unsupported(content_type: str) -> None:
    with pytest.raises(FhirError) as err:
        request_format(content_type)
    assert err.value.status == 415
