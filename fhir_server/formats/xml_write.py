"""JSON (dict) to FHIR XML: spec element order, value attributes, XHTML narrative."""

from __future__ import annotations

import re
from typing import Any

from lxml import etree

from fhir_server.errors import FhirError
from fhir_server.formats.decimals import decimal_text
from fhir_server.formats.model import (
    ATTR,
    COMPLEX,
    FHIR_NS,
    PRIMITIVE,
    RESOURCE,
    XHTML,
    Field,
    Model,
    Table,
    model,
)
from fhir_server.formats.xhtml import raw_div

_NSMAP = {None: FHIR_NS}
_EXTENSION_TAG = f"{{{FHIR_NS}}}extension"
# Narrative placeholder: a processing instruction, which no FHIR content can produce (data
# is escaped, and narratives are parsed with processing instructions removed).
PLACEHOLDER = "fhir-narrative"
_PLACEHOLDER_RE = re.compile(rb"<\?fhir-narrative (\d+)\?>")


class RenderError(FhirError):
    """The JSON tree cannot be rendered as FHIR XML (a server-side content problem)."""

    def __init__(self, diagnostics: str, path: str) -> None:
        super().__init__(500, "exception", f"Cannot render as FHIR XML: {diagnostics}",
                         expression=path)


class Writer:
    """Builds an lxml tree from a FHIR JSON tree."""

    def __init__(self, m: Model) -> None:
        self.m = m
        self.extension_table = m.tables["Extension"]
        self.raw_divs: list[bytes] = []  # narrative text inserted verbatim at placeholders

    def resource(self, parent: etree._Element | None, res: Any, path: str) -> etree._Element:
        if not isinstance(res, dict):
            raise RenderError("a resource must be a JSON object", path)
        rtype = res.get("resourceType")
        if not isinstance(rtype, str) or rtype not in self.m.resources:
            raise RenderError(f"unknown resourceType {rtype!r}", path)
        tag = f"{{{FHIR_NS}}}{rtype}"
        el = etree.Element(tag, nsmap=_NSMAP) if parent is None else etree.SubElement(parent, tag)
        self.children(el, res, self.m.tables[rtype], path or rtype, skip_type=True)
        return el

    def children(self, el: etree._Element, obj: dict, table: Table, path: str,
                 skip_type: bool = False) -> None:
        fields: dict[int, Field] = {}
        for key, value in obj.items():
            if skip_type and key == "resourceType":
                continue
            name = key[1:] if key[:1] == "_" else key
            f = table.get(name)
            if f is None:
                raise RenderError(f"unknown element '{key}'", f"{path}.{key}")
            if f.kind == ATTR:
                if key != name or not isinstance(value, str):
                    raise RenderError(f"'{key}' must be a string", f"{path}.{key}")
                el.set(name, value)
                continue
            if key != name and f.kind != PRIMITIVE:
                raise RenderError(f"'{key}' is only allowed for primitive elements",
                                  f"{path}.{key}")
            seen = fields.get(f.order)
            if seen is not None and seen is not f:
                raise RenderError(f"both '{seen.name}' and '{f.name}' are present",
                                  f"{path}.{f.name}")
            fields[f.order] = f
        for order in sorted(fields):
            f = fields[order]
            self.field(el, f, obj, f"{path}.{f.name}")

    def field(self, el: etree._Element, f: Field, obj: dict, path: str) -> None:
        if f.kind == PRIMITIVE:
            self.primitives(el, f, obj.get(f.name), obj.get("_" + f.name), path)
            return
        value = obj[f.name]
        items = _as_list(value, f.many, path)
        for i, item in enumerate(items):
            item_path = f"{path}[{i}]" if f.many else path
            if f.kind == COMPLEX:
                if not isinstance(item, dict):
                    raise RenderError("expected a JSON object", item_path)
                child = etree.SubElement(el, f.tag)
                self.children(child, item, self.m.tables[f.type], item_path)
            elif f.kind == RESOURCE:
                wrapper = etree.SubElement(el, f.tag)
                self.resource(wrapper, item, item_path)
            elif f.kind == XHTML:
                raw, element = _xhtml(item, item_path)
                if element is not None:
                    el.append(element)
                else:
                    el.append(etree.ProcessingInstruction(PLACEHOLDER, str(len(self.raw_divs))))
                    self.raw_divs.append(raw.encode("utf-8"))

    def primitives(self, el: etree._Element, f: Field, values: Any, exts: Any,
                   path: str) -> None:
        if not f.many:
            self.primitive(el, f, values, exts, path)
            return
        values = [] if values is None else _as_list(values, True, path)
        exts = [] if exts is None else _as_list(exts, True, "_" + path)
        if values and exts and len(values) != len(exts):
            raise RenderError(f"'{f.name}' and '_{f.name}' have different lengths", path)
        for i in range(max(len(values), len(exts))):
            self.primitive(el, f, values[i] if values else None, exts[i] if exts else None,
                           f"{path}[{i}]")

    def primitive(self, el: etree._Element, f: Field, value: Any, ext: Any, path: str) -> None:
        if value is None and ext is None:
            raise RenderError("a primitive needs a value or an id/extension", path)
        child = etree.SubElement(el, f.tag)
        if ext is not None:
            if not isinstance(ext, dict):
                raise RenderError("the '_' companion must be a JSON object", path)
            for key, item in ext.items():
                if key == "id" and isinstance(item, str):
                    child.set("id", item)
                elif key == "extension":
                    for i, extension in enumerate(_as_list(item, True, path)):
                        if not isinstance(extension, dict):
                            raise RenderError("expected a JSON object", f"{path}.extension[{i}]")
                        sub = etree.SubElement(child, _EXTENSION_TAG)
                        self.children(sub, extension, self.extension_table,
                                      f"{path}.extension[{i}]")
                else:
                    raise RenderError(f"unknown element '{key}' on a primitive", f"{path}.{key}")
        if value is not None:
            try:
                child.set("value", _lexical(value, f.json_kind, path))
            except ValueError as exc:  # characters XML cannot carry
                raise RenderError(str(exc), path) from None


def _as_list(value: Any, many: bool, path: str) -> list:
    if many:
        if not isinstance(value, list):
            raise RenderError("expected a JSON array", path)
        return value
    if isinstance(value, list):
        raise RenderError("expected a single value, not an array", path)
    return [value]


def _lexical(value: Any, json_kind: str, path: str) -> str:
    if json_kind == "string":
        if isinstance(value, str):
            return value
    elif json_kind == "boolean":
        if value is True:
            return "true"
        if value is False:
            return "false"
    elif json_kind == "integer":
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
    else:
        text = decimal_text(value)
        if text is not None:
            return text
    raise RenderError(f"{value!r} is not a valid {json_kind}", path)


def _xhtml(value: Any, path: str) -> tuple[str | None, etree._Element | None]:
    if not isinstance(value, str):
        raise RenderError("the narrative div must be an XHTML string", path)
    try:
        return raw_div(value)
    except FhirError as exc:
        raise RenderError(f"the narrative div is not valid XHTML ({exc.diagnostics})",
                          path) from None
    except ValueError as exc:
        raise RenderError(str(exc), path) from None


def _substitute(serialised: bytes, raw_divs: list[bytes]) -> bytes:
    """Replace the narrative placeholders by the verbatim narrative text."""
    if not raw_divs:
        return serialised
    return _PLACEHOLDER_RE.sub(lambda m: raw_divs[int(m.group(1))], serialised)


def render(resource: dict) -> bytes:
    """Serialise a FHIR resource (JSON tree) as an XML document body, without declaration."""
    writer = Writer(model())
    root = writer.resource(None, resource, "")
    return _substitute(etree.tostring(root, encoding="UTF-8"), writer.raw_divs)
