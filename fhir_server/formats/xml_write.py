"""JSON (dict) to FHIR XML: spec element order, value attributes, XHTML narrative.

The document is written as text (no intermediate element tree): FHIR XML has no mixed
content outside the narrative, so escaping attribute values is all the serialisation needs,
and skipping the tree makes rendering several times faster.

Two modes. *Strict* (the default) refuses content that has no FHIR XML form with a
``RenderError`` (status 500: the server built or stored something wrong). *Lenient* (used
when serving stored content) never refuses what can be repaired: characters XML 1.0 cannot
carry become U+FFFD, ``fhir_comments`` (a DSTU2 leftover) is left out, and a narrative that is
not an XHTML div gets the XHTML namespace or is written as escaped text; anything else still
unrenderable is a 406 (the resource exists, only not in XML).
"""

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
    XHTML_NS,
    Field,
    Model,
    Table,
    model,
)
from fhir_server.formats.xhtml import raw_div

# Characters XML 1.0 cannot carry at all (even as character references).
_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# Anything that needs attention in an attribute value: escapes and illegal characters.
_SPECIAL = re.compile('[&<>"\n\r\t\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]')
_DIV_NO_NS = re.compile(r"<div(?=[\s/>])(?![^>]*\sxmlns\s*=)")
_SKIPPED_IN_LENIENT = "fhir_comments"


class RenderError(FhirError):
    """The JSON tree cannot be rendered as FHIR XML (a server-side content problem)."""

    def __init__(self, diagnostics: str, path: str, status: int = 500) -> None:
        if status == 406:
            super().__init__(406, "not-supported",
                             f"This content cannot be represented in FHIR XML ({diagnostics}); "
                             "request application/fhir+json", expression=path)
        else:
            super().__init__(500, "exception", f"Cannot render as FHIR XML: {diagnostics}",
                             expression=path)


class Writer:
    """Writes a FHIR JSON tree as FHIR XML text into a list of string parts."""

    def __init__(self, m: Model, *, lenient: bool = False) -> None:
        self.m = m
        self.lenient = lenient
        self.extension_table = m.tables["Extension"]
        self.out: list[str] = []

    def error(self, diagnostics: str, path: str) -> RenderError:
        return RenderError(diagnostics, path, 406 if self.lenient else 500)

    def attr(self, text: str, path: str) -> str:
        """Escape an attribute value (and deal with characters XML cannot carry)."""
        if _SPECIAL.search(text) is None:
            return text
        if _ILLEGAL.search(text) is not None:
            if not self.lenient:
                raise self.error("All strings must be XML compatible: Unicode or ASCII, no "
                                 "NULL bytes or control characters", path)
            text = _ILLEGAL.sub("\ufffd", text)
        return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
                .replace('"', "&quot;").replace("\n", "&#10;").replace("\r", "&#13;")
                .replace("\t", "&#9;"))

    def resource(self, res: Any, path: str, root: bool = False) -> None:
        if not isinstance(res, dict):
            raise self.error("a resource must be a JSON object", path)
        rtype = res.get("resourceType")
        if not isinstance(rtype, str) or rtype not in self.m.resources:
            raise self.error(f"unknown resourceType {rtype!r}", path)
        opening = f'{rtype} xmlns="{FHIR_NS}"' if root else rtype
        self.element(rtype, opening, res, self.m.tables[rtype], path or rtype, skip_type=True)

    def element(self, tag: str, opening: str, obj: dict, table: Table, path: str,
                skip_type: bool = False) -> None:
        """Write ``<opening attrs>children</tag>`` (or ``<opening attrs/>`` when empty)."""
        attrs, fields = self.scan(obj, table, path, skip_type)
        out = self.out
        out.append(f"<{opening}{attrs}")
        mark = len(out)
        out.append(">")
        for f in fields:
            self.field(f, obj, f"{path}.{f.name}")
        if len(out) == mark + 1:
            out[mark] = "/>"
        else:
            out.append(f"</{tag}>")

    def scan(self, obj: dict, table: Table, path: str,
             skip_type: bool) -> tuple[str, list[Field]]:
        """The attribute text and the child fields of ``obj`` in specification order."""
        fields: dict[int, Field] = {}
        attrs = ""
        for key, value in obj.items():
            if skip_type and key == "resourceType":
                continue
            name = key[1:] if key[:1] == "_" else key
            f = table.get(name)
            if f is None:
                if self.lenient and key == _SKIPPED_IN_LENIENT:
                    continue
                raise self.error(f"unknown element '{key}'", f"{path}.{key}")
            if f.kind == ATTR:
                if key != name or not isinstance(value, str):
                    raise self.error(f"'{key}' must be a string", f"{path}.{key}")
                attrs += f' {name}="{self.attr(value, f"{path}.{key}")}"'
                continue
            if key != name and f.kind != PRIMITIVE:
                raise self.error(f"'{key}' is only allowed for primitive elements",
                                 f"{path}.{key}")
            seen = fields.get(f.order)
            if seen is not None and seen is not f:
                raise self.error(f"both '{seen.name}' and '{f.name}' are present",
                                 f"{path}.{f.name}")
            fields[f.order] = f
        return attrs, [fields[order] for order in sorted(fields)]

    def field(self, f: Field, obj: dict, path: str) -> None:
        kind = f.kind
        if kind == PRIMITIVE:
            self.primitives(f, obj.get(f.name), obj.get("_" + f.name), path)
            return
        items = self.as_list(obj[f.name], f.many, path)
        for i, item in enumerate(items):
            item_path = f"{path}[{i}]" if f.many else path
            if kind == COMPLEX:
                if not isinstance(item, dict):
                    raise self.error("expected a JSON object", item_path)
                self.element(f.name, f.name, item, self.m.tables[f.type], item_path)
            elif kind == RESOURCE:
                self.out.append(f"<{f.name}>")
                self.resource(item, item_path)
                self.out.append(f"</{f.name}>")
            elif kind == XHTML:
                self.out.append(self.xhtml(item, item_path))

    def primitives(self, f: Field, values: Any, exts: Any, path: str) -> None:
        if not f.many:
            self.primitive(f, values, exts, path)
            return
        values = [] if values is None else self.as_list(values, True, path)
        exts = [] if exts is None else self.as_list(exts, True, "_" + path)
        if values and exts and len(values) != len(exts):
            raise self.error(f"'{f.name}' and '_{f.name}' have different lengths", path)
        for i in range(max(len(values), len(exts))):
            self.primitive(f, values[i] if values else None, exts[i] if exts else None,
                           f"{path}[{i}]")

    def primitive(self, f: Field, value: Any, ext: Any, path: str) -> None:
        if value is None and ext is None:
            raise self.error("a primitive needs a value or an id/extension", path)
        name = f.name
        if ext is None:  # the common case: <name value="..."/>
            self.out.append(f'<{name} value="{self.attr(self.lexical(value, f, path), path)}"/>')
            return
        if not isinstance(ext, dict):
            raise self.error("the '_' companion must be a JSON object", path)
        attrs = ""
        extensions: list = []
        for key, item in ext.items():
            if key == "id" and isinstance(item, str):
                attrs += f' id="{self.attr(item, path)}"'
            elif key == "extension":
                extensions = self.as_list(item, True, path)
            elif not (self.lenient and key == _SKIPPED_IN_LENIENT):
                raise self.error(f"unknown element '{key}' on a primitive", f"{path}.{key}")
        if value is not None:
            attrs += f' value="{self.attr(self.lexical(value, f, path), path)}"'
        if not extensions:
            self.out.append(f"<{name}{attrs}/>")
            return
        self.out.append(f"<{name}{attrs}>")
        for i, extension in enumerate(extensions):
            if not isinstance(extension, dict):
                raise self.error("expected a JSON object", f"{path}.extension[{i}]")
            self.element("extension", "extension", extension, self.extension_table,
                         f"{path}.extension[{i}]")
        self.out.append(f"</{name}>")

    def as_list(self, value: Any, many: bool, path: str) -> list:
        if many:
            if not isinstance(value, list):
                raise self.error("expected a JSON array", path)
            return value
        if isinstance(value, list):
            raise self.error("expected a single value, not an array", path)
        return [value]

    def lexical(self, value: Any, f: Field, path: str) -> str:
        json_kind = f.json_kind
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
        raise self.error(f"{value!r} is not a valid {json_kind}", path)

    def xhtml(self, value: Any, path: str) -> str:
        """The narrative div as XML text."""
        if not isinstance(value, str):
            raise self.error("the narrative div must be an XHTML string", path)
        try:
            return _div_xml(value)
        except (FhirError, ValueError) as exc:
            if not self.lenient:
                detail = exc.diagnostics if isinstance(exc, FhirError) else str(exc)
                raise self.error(f"the narrative div is not valid XHTML ({detail})",
                                 path) from None
        # Lenient: a div that only lacks the XHTML namespace gets it; anything else is
        # shown as text, so the reader sees what was stored.
        fixed = _DIV_NO_NS.sub(f'<div xmlns="{XHTML_NS}"', value.strip(), count=1)
        if fixed != value.strip() and fixed.startswith("<div"):
            try:
                return _div_xml(fixed)
            except (FhirError, ValueError):
                pass
        text = _ILLEGAL.sub("\ufffd", value)
        text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        return f'<div xmlns="{XHTML_NS}">{text}</div>'


def _div_xml(value: str) -> str:
    raw, element = raw_div(value)
    if element is None:
        return raw  # type: ignore[return-value]
    return etree.tostring(element, encoding="unicode", with_tail=False)


def render(resource: dict, *, lenient: bool = False) -> bytes:
    """Serialise a FHIR resource (JSON tree) as an XML document body, without declaration."""
    writer = Writer(model(), lenient=lenient)
    writer.resource(resource, "", root=True)
    return "".join(writer.out).encode("utf-8")
