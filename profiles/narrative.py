"""Narrative XHTML rules (R4 Narrative, txt-1 and txt-2): one XHTML `div` root, only the
basic HTML formatting elements and attributes (HTML 4.0 chapters 7-11 and 15: text, lists,
tables, links, images, style), no scripts, forms, frames, objects or event attributes,
hyperlinks and images with acceptable URL schemes, and some non-whitespace content."""

from __future__ import annotations

import re
from functools import lru_cache

from lxml import etree

from fhir_server.errors import FhirError
from fhir_server.formats.xhtml import parse_div

XHTML_NS = "http://www.w3.org/1999/xhtml"
XML_NS = "http://www.w3.org/XML/1998/namespace"

ELEMENTS = frozenset({
    "p", "br", "div", "h1", "h2", "h3", "h4", "h5", "h6", "a", "span", "b", "em", "i",
    "strong", "small", "big", "tt", "dfn", "q", "var", "abbr", "acronym", "cite",
    "blockquote", "hr", "address", "bdo", "kbd", "sub", "sup", "ul", "ol", "li", "dl", "dt",
    "dd", "pre", "table", "caption", "colgroup", "col", "thead", "tr", "tfoot", "tbody", "th",
    "td", "code", "samp", "img", "map", "area", "ins", "del", "s", "u", "strike", "center",
    "font"})
# Attributes every element may carry, then those of particular elements.
COMMON_ATTRIBUTES = frozenset({"id", "class", "style", "title", "lang", "dir", "accesskey",
                               "tabindex"})
ELEMENT_ATTRIBUTES = {
    "a": {"href", "name", "rel", "rev", "type", "hreflang", "charset", "shape", "coords"},
    "img": {"src", "alt", "height", "width", "usemap", "ismap", "longdesc", "border", "align",
            "hspace", "vspace"},
    "area": {"shape", "coords", "href", "nohref", "alt"},
    "map": {"name"},
    "table": {"summary", "width", "border", "frame", "rules", "cellspacing", "cellpadding",
              "align", "bgcolor"},
    "th": {"abbr", "axis", "headers", "scope", "rowspan", "colspan", "align", "valign",
           "char", "charoff", "nowrap", "width", "height", "bgcolor"},
    "col": {"span", "width", "align", "valign", "char", "charoff"},
    "blockquote": {"cite"}, "q": {"cite"}, "ins": {"cite", "datetime"},
    "del": {"cite", "datetime"},
    "ol": {"type", "start", "compact"}, "ul": {"type", "compact"}, "li": {"type", "value"},
    "dl": {"compact"}, "pre": {"width"}, "br": {"clear"}, "hr": {"align", "noshade", "size",
                                                                "width"},
    "font": {"size", "color", "face"}, "bdo": {"dir"},
}
for _name in ("td",):
    ELEMENT_ATTRIBUTES[_name] = ELEMENT_ATTRIBUTES["th"]
for _name in ("colgroup",):
    ELEMENT_ATTRIBUTES[_name] = ELEMENT_ATTRIBUTES["col"]
for _name in ("thead", "tbody", "tfoot", "tr"):
    ELEMENT_ATTRIBUTES[_name] = {"align", "valign", "char", "charoff", "bgcolor"}
for _name in ("p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "caption"):
    ELEMENT_ATTRIBUTES[_name] = {"align"}

LINK_SCHEMES = frozenset({"http", "https", "ftp", "mailto", "tel", "urn", "news", "cid"})
IMAGE_SCHEMES = LINK_SCHEMES | {"data"}
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
MAX_CHECKED = 1024 * 1024


def narrative_problems(div: str) -> list[tuple[str, str]]:
    """(invariant key, message) for each rule the narrative breaks; [] when it is fine."""
    if len(div) > MAX_CHECKED:
        return _check(div)
    return list(_cached(div))


@lru_cache(maxsize=1024)
def _cached(div: str) -> tuple[tuple[str, str], ...]:
    return tuple(_check(div))


def _check(div: str) -> list[tuple[str, str]]:
    try:
        element = parse_div(div)
    except (FhirError, ValueError) as exc:
        reason = exc.diagnostics if isinstance(exc, FhirError) else str(exc)
        return [("txt-1", f"The narrative is not well-formed XHTML with a <div> root in the "
                          f"XHTML namespace: {reason}")]
    problems: list[tuple[str, str]] = []
    for node in element.iter():
        if not isinstance(node.tag, str):
            continue  # comments and processing instructions were removed by the parser
        namespace, _, local = node.tag[1:].partition("}") if node.tag.startswith("{") else \
            ("", "", node.tag)
        if namespace != XHTML_NS:
            problems.append(("txt-1", f"Element <{local}> is not in the XHTML namespace"))
            continue
        if local not in ELEMENTS:
            problems.append(("txt-1", f"Element <{local}> is not allowed in a narrative"))
        allowed = ELEMENT_ATTRIBUTES.get(local, set())
        for attr, value in node.attrib.items():
            attr_ns, _, attr_local = attr[1:].partition("}") if attr.startswith("{") else \
                ("", "", attr)
            if attr_ns == XML_NS and attr_local in ("lang", "space"):
                continue
            if attr_ns or (attr_local not in COMMON_ATTRIBUTES and attr_local not in allowed):
                problems.append(("txt-1", f"Attribute '{attr_local}' is not allowed on "
                                          f"<{local}> in a narrative"))
                continue
            if attr_local in ("href", "src", "longdesc", "cite"):
                problem = _url_problem(local, attr_local, value)
                if problem:
                    problems.append(("txt-1", problem))
    if not _has_content(element):
        problems.append(("txt-2", "The narrative has no non-whitespace content"))
    return problems


def _url_problem(element: str, attr: str, value: str) -> str | None:
    value = value.strip()
    match = _SCHEME.match(value)
    if match is None:
        return None  # relative reference or fragment
    scheme = match.group(1).lower()
    allowed = IMAGE_SCHEMES if element == "img" else LINK_SCHEMES
    if scheme not in allowed:
        return f"The URL scheme '{scheme}:' is not allowed in <{element} {attr}=...>"
    return None


def _has_content(element: etree._Element) -> bool:
    text = "".join(element.itertext())
    if text.strip():
        return True
    return any(isinstance(n.tag, str) and n.tag.endswith("}img") for n in element.iter())
