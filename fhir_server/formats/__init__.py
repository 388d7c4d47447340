"""Wire formats: FHIR XML conversion and content negotiation (pure, no HTTP objects)."""

from fhir_server.formats.decimals import FhirDecimal, json_default
from fhir_server.formats.negotiation import request_format, response_format
from fhir_server.formats.xml import json_to_xml, xml_to_json

__all__ = [
    "FhirDecimal",
    "json_default",
    "json_to_xml",
    "request_format",
    "response_format",
    "xml_to_json",
]
