"""FHIR XML format: ``json_to_xml`` and ``xml_to_json`` (see the FHIR spec, xml.html).

JSON → XML writes the resource with the FHIR namespace, children in specification order,
primitives as ``value`` attributes (merging ``_name`` companions: ``id`` attribute and
``extension`` children), nested resources wrapped in their element, and ``Narrative.div`` as
XHTML. XML → JSON parses with a hardened parser (no DTD, entities or network; bounded size
and depth) and types primitives from the R4 model: booleans, integers, and decimals as
:class:`~fhir_server.formats.decimals.FhirDecimal` (exact text kept; serialise with orjson's
``default=json_default``). Arrays follow the maximum cardinality of each element.
"""

from __future__ import annotations

from typing import Any

from fhir_server.formats.safe_xml import parse_xml
from fhir_server.formats.xml_read import from_xml_tree
from fhir_server.formats.xml_write import render

XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'


def json_to_xml(resource: dict[str, Any], *, lenient: bool = False) -> bytes:
    """Serialise a FHIR resource (JSON tree) as FHIR XML (UTF-8 bytes with declaration).

    Strict (default): raises FhirError(500, "exception") when the tree holds content that has
    no FHIR XML form (an unknown element or resource type, a wrongly typed primitive, a
    malformed div, characters XML cannot carry). ``lenient=True`` is for serving stored
    content: it repairs what it can (U+FFFD for characters XML cannot carry, ``fhir_comments``
    left out, a narrative that is not an XHTML div given the namespace or written as text)
    and raises FhirError(406, "not-supported") for anything else.
    """
    return XML_DECLARATION + render(resource, lenient=lenient)


def xml_to_json(data: bytes, *, max_bytes: int) -> dict[str, Any]:
    """Parse an untrusted FHIR XML document into a FHIR JSON tree.

    Raises FhirError(400) with an OperationOutcome-ready issue for oversized, hostile
    (DOCTYPE, entities), too deep or malformed XML and for content that is not FHIR R4
    (wrong namespace, unknown elements, invalid primitive values, repeated singletons).
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    return from_xml_tree(parse_xml(data, max_bytes=max_bytes), data)
