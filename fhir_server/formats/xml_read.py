"""FHIR XML to JSON (dict): typed primitives, cardinality-driven arrays, `_name` companions."""

from __future__ import annotations

import re
from typing import Any

from lxml import etree

from fhir_server.errors import FhirError
from fhir_server.formats.decimals import FhirDecimal
from fhir_server.formats.model import (
    ATTR,
    COMPLEX,
    FHIR_NS,
    PRIMITIVE,
    RESOURCE,
    XHTML,
    XHTML_NS,
    Field,
    Model,
    Table,
    model,
)
from fhir_server.formats.safe_xml import MAX_DEPTH
from fhir_server.formats.xhtml import div_text, source_divs

_FHIR_PREFIX = f"{{{FHIR_NS}}}"
_XHTML_PREFIX = f"{{{XHTML_NS}}}"
_EXTENSION_TAG = f"{{{FHIR_NS}}}extension"
_INTEGER = re.compile(r"-?[0-9]+\Z")
_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?\Z")


def _invalid(diagnostics: str, path: str, code: str = "structure") -> FhirError:
    return FhirError(400, code, diagnostics, expression=path or None)


class Reader:
    """Turns an lxml tree of FHIR XML into a FHIR JSON tree."""

    def __init__(self, m: Model, narratives: dict[etree._Element, str] | None = None) -> None:
        self.m = m
        self.extension_table = m.tables["Extension"]
        self.narratives = narratives or {}

    def resource(self, el: etree._Element, path: str, depth: int) -> dict[str, Any]:
        tag = el.tag
        if not isinstance(tag, str) or not tag.startswith(_FHIR_PREFIX):
            where = path or "the root element"
            raise _invalid(f"Expected a FHIR resource in namespace {FHIR_NS} at {where}, "
                           f"found {_describe(el)}", path or "")
        rtype = tag[len(_FHIR_PREFIX):]
        if rtype not in self.m.resources:
            raise _invalid(f"Unknown resource type '{rtype}'", path or rtype, "not-supported")
        if el.attrib and any(not k.startswith("{") for k in el.attrib):
            raise _invalid(f"Unexpected attribute(s) {_names(el.attrib)} on a resource "
                           "(Resource.id is an element)", path or rtype)
        out: dict[str, Any] = {"resourceType": rtype}
        self.children(el, out, self.m.tables[rtype], path or rtype, depth)
        return out

    def children(self, el: etree._Element, out: dict[str, Any], table: Table, path: str,
                 depth: int) -> None:
        if depth > MAX_DEPTH:
            raise _invalid(f"The XML document is nested deeper than {MAX_DEPTH} levels", path,
                           "too-costly")
        if el.text is not None and el.text.strip():
            raise _invalid("Text content is not allowed in FHIR elements (use the value "
                           "attribute)", path)
        collected: dict[int, tuple[Field, list]] = {}
        for child in el:
            tag = child.tag
            if not isinstance(tag, str):
                raise _invalid(f"Unexpected {_describe(child)} (entity references are not "
                               "allowed)", path)
            if child.tail is not None and child.tail.strip():
                raise _invalid("Text content is not allowed in FHIR elements", path)
            if tag.startswith(_FHIR_PREFIX):
                name = tag[len(_FHIR_PREFIX):]
            elif tag == f"{_XHTML_PREFIX}div":
                name = "div"
            else:
                raise _invalid(f"Unexpected element {_describe(child)}: FHIR elements are in "
                               f"namespace {FHIR_NS}", path)
            f = table.get(name)
            if f is None or f.kind == ATTR or (f.kind == XHTML) != (name == "div" and
                                                                   tag.startswith(_XHTML_PREFIX)):
                raise _invalid(f"Unknown element '{name}'", f"{path}.{name}")
            entry = collected.get(f.order)
            if entry is None:
                entry = collected[f.order] = (f, [])
            elif entry[0] is not f:
                raise _invalid(f"Both '{entry[0].name}' and '{name}' are present",
                               f"{path}.{name}")
            elif not f.many:
                raise _invalid(f"Element '{name}' may appear only once", f"{path}.{name}")
            entry[1].append(child)
        for key, value in el.items():
            if key.startswith("{"):
                continue  # attributes of other namespaces (xsi:schemaLocation) carry no data
            f = table.get(key)
            if f is None or f.kind != ATTR:
                raise _invalid(f"Unknown attribute '{key}'", f"{path}.{key}")
            out[key] = value
        for order in sorted(collected):
            f, elements = collected[order]
            self.field(out, f, elements, f"{path}.{f.name}", depth)

    def field(self, out: dict[str, Any], f: Field, elements: list, path: str,
              depth: int) -> None:
        if f.kind == PRIMITIVE:
            values = []
            exts = []
            for i, child in enumerate(elements):
                value, ext = self.primitive(child, f, f"{path}[{i}]" if f.many else path,
                                            depth + 1)
                values.append(value)
                exts.append(ext)
            if f.many:
                if any(v is not None for v in values):
                    out[f.name] = values
                if any(e is not None for e in exts):
                    out["_" + f.name] = exts
            else:
                if values[0] is not None:
                    out[f.name] = values[0]
                if exts[0] is not None:
                    out["_" + f.name] = exts[0]
            return
        items = []
        for i, child in enumerate(elements):
            item_path = f"{path}[{i}]" if f.many else path
            if f.kind == COMPLEX:
                obj: dict[str, Any] = {}
                self.children(child, obj, self.m.tables[f.type], item_path, depth + 1)
                items.append(obj)
            elif f.kind == RESOURCE:
                items.append(self.contained(child, item_path, depth + 1))
            else:
                items.append(self.narratives.get(child) or div_text(child))
        out[f.name] = items if f.many else items[0]

    def contained(self, el: etree._Element, path: str, depth: int) -> dict[str, Any]:
        if el.attrib or (el.text is not None and el.text.strip()):
            raise _invalid("A resource container holds exactly one resource element", path)
        kids = list(el)
        if len(kids) != 1:
            raise _invalid(f"A resource container holds exactly one resource, found "
                           f"{len(kids)}", path)
        if kids[0].tail is not None and kids[0].tail.strip():
            raise _invalid("Text content is not allowed in FHIR elements", path)
        return self.resource(kids[0], path, depth + 1)

    def primitive(self, el: etree._Element, f: Field, path: str,
                  depth: int) -> tuple[Any, dict[str, Any] | None]:
        value = None
        ext: dict[str, Any] = {}
        for key, text in el.items():
            if key == "value":
                value = _typed(text, f, path)
            elif key == "id":
                ext["id"] = text
            elif not key.startswith("{"):
                raise _invalid(f"Unknown attribute '{key}'", f"{path}.{key}")
        if el.text is not None and el.text.strip():
            raise _invalid("Text content is not allowed in FHIR elements (use the value "
                           "attribute)", path)
        extensions = []
        for i, child in enumerate(el):
            if child.tag != _EXTENSION_TAG:
                raise _invalid(f"Unexpected {_describe(child)}: a primitive holds only "
                               "extensions", path)
            if child.tail is not None and child.tail.strip():
                raise _invalid("Text content is not allowed in FHIR elements", path)
            obj: dict[str, Any] = {}
            self.children(child, obj, self.extension_table, f"{path}.extension[{i}]",
                          depth + 1)
            extensions.append(obj)
        if extensions:
            ext["extension"] = extensions
        if value is None and not ext:
            raise _invalid("A primitive element needs a value attribute or extensions", path,
                           "required")
        return value, (ext or None)


def _typed(text: str, f: Field, path: str) -> Any:
    kind = f.json_kind
    if kind == "string":
        return text
    if kind == "boolean":
        if text == "true":
            return True
        if text == "false":
            return False
    elif kind == "integer":
        if _INTEGER.match(text):
            return int(text)
    elif _DECIMAL.match(text):
        # Whole numbers become int (written back identically); others keep their text.
        return int(text) if _INTEGER.match(text) and text != "-0" else FhirDecimal(text)
    raise _invalid(f"'{text}' is not a valid {f.type}", path, "value")


def _names(attrib: Any, limit: int = 5) -> str:
    """At most ``limit`` attribute names, for a bounded diagnostic."""
    names = sorted(attrib)
    shown = ", ".join(repr(n[:64]) for n in names[:limit])
    return f"[{shown}, ... {len(names)} in all]" if len(names) > limit else f"[{shown}]"


def _describe(el: Any) -> str:
    tag = el.tag
    if isinstance(tag, str):
        return f"element <{etree.QName(tag).localname}> in namespace " \
               f"{etree.QName(tag).namespace or '(none)'}" if tag.startswith("{") else \
               f"element <{tag}> without namespace"
    return "an entity reference" if isinstance(el, etree._Entity) else "a non-element node"


def from_xml_tree(root: etree._Element, source: bytes | None = None) -> dict[str, Any]:
    """Convert the root element of a FHIR XML document into a FHIR JSON tree.

    With the document ``source``, narratives keep their exact text.
    """
    narratives = source_divs(root, source) if source is not None else {}
    return Reader(model(), narratives).resource(root, "", 0)
