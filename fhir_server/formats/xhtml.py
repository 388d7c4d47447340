"""Narrative XHTML (``Narrative.div``) between its JSON string form and FHIR XML.

XML cannot tell ``<td></td>`` from ``<td/>`` or ``&quot;`` from ``"``, so re-serialising a
parsed narrative changes its text. To keep JSON → XML → JSON lossless the narrative text is
carried verbatim whenever that is well-formed on its own:

* JSON → XML: the div string is parsed (hardened parser) only to check it is one XHTML
  ``div`` declaring the XHTML namespace itself; the text is then inserted as is
  (``raw_div``). HTML named entities (``&nbsp;``), which XML lacks, become numeric
  references first.
* XML → JSON: the source text of each narrative div is cut from the document
  (``source_divs``) and used when it is well-formed on its own; otherwise the element is
  serialised (``div_text``).
"""

from __future__ import annotations

import html.entities
import re
from functools import lru_cache

from lxml import etree

from fhir_server.formats.model import FHIR_NS, XHTML_NS
from fhir_server.formats.safe_xml import parse_xml

DIV_TAG = f"{{{XHTML_NS}}}div"
MAX_DIV_BYTES = 10 * 1024 * 1024
_CACHE_LIMIT = 16 * 1024  # narratives up to this size have their check cached
_ENTITY = re.compile(r"&([A-Za-z][A-Za-z0-9]*);")
_XML_ENTITIES = {"amp", "lt", "gt", "quot", "apos"}
# Comments, CDATA sections, processing instructions (skipped) and div start/end tags.
_MARKUP = re.compile(
    r"<!--.*?-->|<!\[CDATA\[.*?\]\]>|<\?.*?\?>"
    r"""|<(/?)((?:[^\s/>!?:]+:)?div)(?=[\s/>])((?:[^>"']|"[^"]*"|'[^']*')*)>""",
    re.S,
)
_FHIR_PREFIX = f"{{{FHIR_NS}}}"


def _named_entity(match: re.Match[str]) -> str:
    name = match.group(1)
    if name in _XML_ENTITIES:
        return match.group(0)
    code = html.entities.name2codepoint.get(name)
    return f"&#{code};" if code is not None else match.group(0)


def _standalone_div(text: str) -> etree._Element | None:
    """The parsed div when ``text`` is exactly one XHTML div usable verbatim, else None."""
    if not text.startswith("<div") or not (text.endswith("</div>") or text.endswith("/>")):
        return None
    element = parse_xml(text.encode("utf-8"), max_bytes=MAX_DIV_BYTES)
    if element.tag != DIV_TAG or element.prefix is not None:
        return None
    return element


@lru_cache(maxsize=512)
def _checked_verbatim(text: str) -> bool:
    return _standalone_div(text) is not None


def raw_div(div: str) -> tuple[str | None, etree._Element | None]:
    """Check the JSON form of a narrative; return (verbatim text or None, parsed element).

    The element is None when the text is usable verbatim (checks of recent narratives are
    cached). Raises FhirError(400) from the hardened parser and ValueError when the root is
    not an XHTML div.
    """
    if "&" in div:
        div = _ENTITY.sub(_named_entity, div)
    text = div.strip()
    if len(text) <= _CACHE_LIMIT:
        if _checked_verbatim(text):
            return text, None
    elif _standalone_div(text) is not None:
        return text, None
    element = parse_xml(text.encode("utf-8"), max_bytes=MAX_DIV_BYTES)
    if element.tag != DIV_TAG:
        raise ValueError("the narrative must be a <div> in the XHTML namespace")
    return None, element


def parse_div(div: str) -> etree._Element:
    """The parsed element of a narrative's JSON form (HTML named entities allowed). Raises
    FhirError(400) from the hardened parser and ValueError when the root is not an XHTML
    div."""
    if "&" in div:
        div = _ENTITY.sub(_named_entity, div)
    element = parse_xml(div.strip().encode("utf-8"), max_bytes=MAX_DIV_BYTES)
    if element.tag != DIV_TAG:
        raise ValueError("the narrative must be a <div> in the XHTML namespace")
    return element


def div_text(element: etree._Element) -> str:
    """Serialise a div element as its JSON form (XHTML as the default namespace)."""
    if element.prefix is not None:
        element = _default_namespace_copy(element)
    return etree.tostring(element, encoding="unicode", with_tail=False)


def source_divs(root: etree._Element, source: bytes) -> dict[etree._Element, str]:
    """Map each narrative div element under ``root`` to its verbatim text in ``source``.

    Divs whose text is not well-formed on its own (a namespace declared on an ancestor, a
    prefix) are left out; the caller serialises those.
    """
    divs = [el for el in root.iter(DIV_TAG)
            if (parent := el.getparent()) is not None and parent.tag.startswith(_FHIR_PREFIX)]
    if not divs:
        return {}
    encoding = root.getroottree().docinfo.encoding or "utf-8"
    try:
        text = source.decode("utf-8-sig" if encoding.lower() == "utf-8" else encoding)
    except (LookupError, UnicodeDecodeError):
        return {}
    spans = _top_level_div_spans(text)
    if len(spans) != len(divs):
        return {}
    out: dict[etree._Element, str] = {}
    for element, (start, end) in zip(divs, spans, strict=True):
        candidate = text[start:end]
        try:
            if _standalone_div(candidate) is not None:
                out[element] = candidate
        except Exception:  # noqa: BLE001 - any failure means: serialise the element instead
            continue
    return out


def _top_level_div_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of every ``div`` element that is not inside another div."""
    spans = []
    depth = 0
    start = 0
    for match in _MARKUP.finditer(text):
        if match.group(2) is None:
            continue
        closing = match.group(1) == "/"
        empty = match.group(3).rstrip().endswith("/")
        if closing:
            depth -= 1
            if depth == 0:
                spans.append((start, match.end()))
        elif depth == 0:
            start = match.start()
            if empty:
                spans.append((start, match.end()))
            else:
                depth = 1
        elif not empty:
            depth += 1
    return spans


def _default_namespace_copy(el: etree._Element) -> etree._Element:
    """Re-create an XHTML subtree with XHTML as the default namespace (``h:div`` → ``div``)."""
    copy = etree.Element(el.tag, attrib=dict(el.attrib), nsmap={None: XHTML_NS})
    copy.text = el.text
    _copy_children(el, copy)
    return copy


def _copy_children(src: etree._Element, dst: etree._Element) -> None:
    for child in src:
        if isinstance(child.tag, str):
            sub = etree.SubElement(dst, child.tag, attrib=dict(child.attrib))
            sub.text = child.text
            _copy_children(child, sub)
            sub.tail = child.tail
