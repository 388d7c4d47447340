"""Hardened XML parsing: no DTDs, no entities, no network, bounded size and depth."""

from __future__ import annotations

from lxml import etree

from fhir_server.errors import FhirError

MAX_DEPTH = 128  # FHIR elements; libxml2 itself stops at 256 levels without huge_tree


def _parser() -> etree.XMLParser:
    # A fresh parser per document: lxml parsers keep state and are not shared across threads.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        dtd_validation=False,
        load_dtd=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
        collect_ids=False,
    )


def _describe_syntax_error(exc: etree.XMLSyntaxError) -> str:
    text = " ".join((exc.msg or str(exc)).split())
    line, column = exc.position if exc.position else (0, 0)
    text = text.split(", line ")[0]
    return f"{text} (line {line}, column {column})" if line else text


def _refuse(code: str, diagnostics: str) -> FhirError:
    return FhirError(400, code, diagnostics)


def parse_xml(data: bytes | str, *, max_bytes: int) -> etree._Element:
    """Parse an untrusted XML document and return its root element.

    Raises FhirError(400) for documents larger than ``max_bytes``, any DOCTYPE or ENTITY
    declaration (external entities, entity expansion bombs), entity references, nesting
    deeper than libxml2's safe limit, and malformed XML.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    if len(data) > max_bytes:
        raise _refuse("too-costly",
                      f"The XML document is {len(data)} bytes; the limit is {max_bytes} bytes")
    if not data.strip():
        raise _refuse("structure", "The XML document is empty")
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise _refuse("structure", "DOCTYPE and ENTITY declarations are not allowed in FHIR XML")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        message = _describe_syntax_error(exc)
        if "depth" in message.lower():
            raise _refuse("too-costly", f"The XML document is nested too deeply: {message}") \
                from None
        if "too long" in message.lower() or "huge" in message.lower():
            raise _refuse("too-costly", f"The XML document has an oversized value: {message}") \
                from None
        raise _refuse("structure", f"The body is not well-formed XML: {message}") from None
    except ValueError as exc:
        raise _refuse("structure", f"The body is not well-formed XML: {exc}") from None
    docinfo = root.getroottree().docinfo
    if docinfo.internalDTD is not None or docinfo.externalDTD is not None or docinfo.doctype:
        raise _refuse("structure", "DOCTYPE and ENTITY declarations are not allowed in FHIR XML")
    return root
