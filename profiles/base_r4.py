"""Base R4 validation: one walk over the resource with the R4 element model
(`profiles/r4model.py`) that checks, for every resource type and datatype,

* structure: known properties, arrays where the element repeats and nowhere else, no empty
  arrays or objects, no JSON null outside the `_primitive` arrays, one value per choice
  element, the required elements, nested resources (contained, Bundle entries, Parameters);
* primitives: JSON type, the R4 format (regex) plus what a regex cannot say (calendar dates,
  32-bit integers, strict base64, 1 MB strings, control characters), ids of resources and
  elements, codes of required bindings that expand offline;
* every invariant of the core R4 StructureDefinitions where its element is present, compiled
  to Python (`profiles/fhirpath.py`); ele-1, ext-1, dom-2..5, ref-1, txt-1 and txt-2 natively;
* references (well formed, allowed target type, `#id` of a contained resource), extensions
  (`profiles/extensions.py`), narrative XHTML (`profiles/narrative.py`) and Bundle integrity
  (`profiles/bundle_rules.py`).

Profile rules (Gravity, US Core, SDC) are applied on top by `validator.py`.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import re
from decimal import Decimal
from typing import Any

from fhir_server.errors import Issue
from fhir_server.resource_types import is_resource_type
from profiles import fhirpath
from profiles.extensions import Holder, check_core, core
from profiles.narrative import narrative_problems
from profiles.r4model import PRIMITIVE, REL_REF, Child, R4Model, model

ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
# A relative literal reference: Type/id or Type/id/_history/vid.
_ABS_REF = re.compile(r"/([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(/_history/[A-Za-z0-9\-.]{1,64})?$")
_BAD_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_WS = re.compile(r"\s")
_BASE64 = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")
MAX_STRING = 1024 * 1024
MAX_ISSUES = 200
MAX_DEPTH = 120
INT32 = (-2_147_483_648, 2_147_483_647)
_INTEGERS = {"integer": INT32, "unsignedInt": (0, INT32[1]), "positiveInt": (1, INT32[1])}
_STRINGLIKE = {"string", "markdown", "code", "id", "uri", "url", "canonical", "oid", "uuid",
               "base64Binary", "date", "dateTime", "instant", "time", "xhtml"}


def validate_base(resource: Any, *, expected_type: str | None = None,
                  strict_extensions: bool = False) -> list[Issue]:
    """Base R4 validation. Returns the issues (errors and warnings); no error = valid."""
    if not isinstance(resource, dict):
        return [Issue("error", "structure", "The body must be a JSON object (a FHIR resource)")]
    res_type = resource.get("resourceType")
    if not isinstance(res_type, str) or not res_type:
        return [Issue("error", "required", "Missing resourceType", ["resourceType"])]
    if not is_resource_type(res_type):
        return [Issue("error", "not-supported", f"Unknown resource type '{res_type}'",
                      ["resourceType"])]
    if expected_type is not None and res_type != expected_type:
        return [Issue("error", "invalid",
                      f"resourceType '{res_type}' does not match the URL type '{expected_type}'",
                      ["resourceType"])]
    walker = Walker(model(), strict_extensions)
    walker.resource(resource, res_type, None, None)
    return walker.issues[:MAX_ISSUES]


def errors_only(issues: list[Issue]) -> list[Issue]:
    return [i for i in issues if i.severity in ("error", "fatal")]


class _Scope:
    """The resource being walked: %resource, %rootResource and how references resolve."""

    __slots__ = ("resource", "root", "bundle", "env")

    def __init__(self, resource: dict, root: dict, bundle: Any) -> None:
        self.resource = resource
        self.root = root
        self.bundle = bundle  # profiles.bundle_rules.BundleIndex or None
        self.env = fhirpath.Env(resource, root, resolver=self.resolve,
                                html_checks=lambda div: not narrative_problems(div))

    def resolve(self, ref: str) -> Any:
        if ref.startswith("#"):
            if ref == "#":
                return self.root
            for c in self.root.get("contained") or []:
                if isinstance(c, dict) and c.get("id") == ref[1:]:
                    return c
            return None
        if self.bundle is not None:
            found = self.bundle.resolve(ref, self.resource)
            if found is not None:
                return found
        m = REL_REF.match(ref) or _ABS_REF.search(ref)
        return {"resourceType": m.group(1), "id": m.group(2)} if m else None


class Walker:
    """One validation run over one resource (and the resources nested in it)."""

    def __init__(self, r4: R4Model, strict_extensions: bool) -> None:
        self.r4 = r4
        self.strict = strict_extensions
        self.issues: list[Issue] = []
        self.depth = 0

    def add(self, severity: str, code: str, message: str, expr: str) -> None:
        if len(self.issues) < MAX_ISSUES:
            self.issues.append(Issue(severity, code, message, [expr]))

    # -- resources ------------------------------------------------------------------------
    def resource(self, obj: dict, rtype: str, expr: str | None, container: _Scope | None,
                 bundle: Any = None) -> None:
        """Walk a resource; `container` is set for contained resources, `bundle` for Bundle
        entries."""
        expr = expr or rtype
        root = container.root if container is not None else obj
        scope = _Scope(obj, root, bundle if bundle is not None else
                       (container.bundle if container is not None else None))
        if rtype == "Bundle":
            from profiles.bundle_rules import BundleIndex

            scope.bundle = BundleIndex(obj)
        res_id = obj.get("id")
        if res_id is not None and (not isinstance(res_id, str) or not ID_RE.match(res_id)):
            self.add("error", "value", "id must be 1-64 characters from A-Z a-z 0-9 - .",
                     f"{expr}.id")
        me = Holder(rtype, frozenset({rtype}), self._ancestors(rtype), resource_root=True)
        self.object(obj, rtype, rtype, expr, rtype, me, scope, is_resource=True)
        if obj.get("contained") and container is None:
            self._contained_rules(obj, expr)
        if rtype == "Bundle":
            from profiles.bundle_rules import bundle_issues

            for issue in bundle_issues(obj, expr, scope.bundle):
                if len(self.issues) < MAX_ISSUES:
                    self.issues.append(issue)

    def _contained_rules(self, obj: dict, expr: str) -> None:
        """dom-2 .. dom-5: contained resources have no contained resources, version,
        lastUpdated or security labels, and each is referenced from the container."""
        contained = [c for c in obj["contained"] if isinstance(c, dict)]
        for i, c in enumerate(contained):
            where = f"{expr}.contained[{i}]"
            if c.get("contained"):
                self.add("error", "invariant", "Constraint failed: dom-2: If the resource is "
                         "contained in another resource, it SHALL NOT contain nested "
                         "Resources", where)
            meta = c.get("meta") if isinstance(c.get("meta"), dict) else {}
            if "versionId" in meta or "lastUpdated" in meta:
                self.add("error", "invariant", "Constraint failed: dom-4: If a resource is "
                         "contained in another resource, it SHALL NOT have a meta.versionId or "
                         "a meta.lastUpdated", where)
            if meta.get("security"):
                self.add("error", "invariant", "Constraint failed: dom-5: If a resource is "
                         "contained in another resource, it SHALL NOT have a security label",
                         where)
        strings: set[str] = set()
        _collect_strings(obj, strings)
        for i, c in enumerate(contained):
            cid = c.get("id")
            if not isinstance(cid, str):
                continue
            inner: set[str] = set()
            _collect_strings(c, inner)
            if f"#{cid}" not in strings and "#" not in inner:
                self.add("error", "invariant", "Constraint failed: dom-3: If the resource is "
                         "contained in another resource, it SHALL be referred to from elsewhere "
                         f"in the resource or SHALL refer to the containing resource (unmatched: "
                         f"{cid})", f"{expr}.contained[{i}]")

    def _ancestors(self, type_: str) -> frozenset[str]:
        out = []
        parent = self.r4.kinds.get(type_, [None, None])[1]
        while parent:
            out.append(parent)
            parent = self.r4.kinds.get(parent, [None, None])[1]
        return frozenset(out)

    # -- objects --------------------------------------------------------------------------
    def object(self, obj: dict, definition: str, path: str, expr: str, full_path: str,
               me: Holder, scope: _Scope, *, is_resource: bool = False,
               parent: Holder | None = None, child: Child | None = None) -> None:
        """Walk one JSON object: `me` describes it (for the extensions it holds), `parent`
        the element holding it (for its own extension context), `child` its definition."""
        node = self.r4.node(definition, path)
        if node is None:
            return
        if not is_resource:
            if not obj:  # reported, then checked like any other (required elements, rules)
                self.add("error", "structure", "An element must have some content: an empty "
                         "object is not allowed (ele-1)", expr)
            elif all(k == "id" for k in obj):
                self.add("error", "invariant", "Constraint failed: ele-1: All FHIR elements "
                         "must have a @value or children", expr)
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.add("error", "too-costly", "The resource is nested too deeply", expr)
            self.depth -= 1
            return
        stems: set[str] = set()
        for key, value in obj.items():
            if is_resource and key in ("resourceType", "id"):
                continue  # the resource id is checked as an `id` by resource()
            if key.startswith("_"):
                base = key[1:]
                element = node.children.get(base)
                if element is None or element.kind != PRIMITIVE:
                    self.add("error", "structure", f"Unknown element '{expr}.{key}'",
                             f"{expr}.{key}")
                elif base not in obj:
                    if element.stem:
                        self._stem(element, stems, expr)
                    self._element(element, None, value, expr, full_path, scope, me)
                continue
            element = node.children.get(key)
            if element is None:
                what = "fhir_comments is not allowed" if key == "fhir_comments" else \
                    f"Unknown element '{expr}.{key}'"
                self.add("error", "structure", what, f"{expr}.{key}")
                continue
            if element.stem:
                self._stem(element, stems, expr)
            self._element(element, value, obj.get("_" + key), expr, full_path, scope, me)
        for label, keys in node.required:
            if not any(k in obj or "_" + k in obj for k in keys):
                self.add("error", "required", f"Missing required element '{expr}.{label}'",
                         f"{expr}.{label}")
        self.depth -= 1
        if node.invariants:
            self._invariants(node.invariants, obj, expr, scope)
        if definition == "Narrative" and isinstance(obj.get("div"), str):
            for key, message in narrative_problems(obj["div"]):
                self.add("error", "invariant", f"Constraint failed: {key}: {message}",
                         f"{expr}.div")
        elif definition == "Extension" and parent is not None:
            self._extension(obj, expr, parent)
        elif definition == "Reference" and child is not None:
            self._reference(obj, expr, scope, child.targets)

    def _stem(self, element: Child, stems: set[str], expr: str) -> None:
        if element.stem in stems:
            self.add("error", "structure", f"Only one value is allowed for {expr}."
                     f"{element.stem}[x]", f"{expr}.{element.stem}")
        stems.add(element.stem)  # type: ignore[arg-type]

    def _element(self, element: Child, value: Any, ext: Any, expr: str, full_path: str,
                 scope: _Scope, me: Holder) -> None:
        where = f"{expr}.{element.step}"
        if element.array:
            if value is not None and not isinstance(value, list):
                self.add("error", "structure", f"{where} must be an array", where)
                value = [value]
            if ext is not None and not isinstance(ext, list):
                self.add("error", "structure", f"_{element.key} must be an array", where)
                ext = None
            if value == [] or ext == []:
                self.add("error", "structure", f"Array {where} must not be empty: omit the "
                         "element instead", where)
                return
            values, exts = value or [], ext or []
            if value is not None and ext is not None and len(values) != len(exts):
                self.add("error", "structure", f"{where} and _{element.key} must have the "
                         "same number of items", where)
            for i in range(max(len(values), len(exts))):
                item = values[i] if i < len(values) else None
                item_ext = exts[i] if i < len(exts) else None
                if item is None and item_ext is None:
                    self.add("error", "structure", "null is only allowed in an array that has "
                             "a matching extension entry", f"{where}[{i}]")
                    continue
                self._value(element, item, item_ext, f"{where}[{i}]", full_path, scope, me)
            return
        if isinstance(value, list) or isinstance(ext, list):
            self.add("error", "structure", f"{where} must not be an array", where)
            return
        if value is None and ext is None:
            self.add("error", "structure", f"{where} is null: omit the element instead", where)
            return
        self._value(element, value, ext, where, full_path, scope, me)

    def _value(self, element: Child, value: Any, ext: Any, expr: str, full_path: str,
               scope: _Scope, parent: Holder) -> None:
        elem_full = f"{full_path}.{element.stem or element.key}"
        if element.kind == PRIMITIVE:
            if value is not None:
                self._primitive(element, value, expr)
            if ext is not None:
                self._primitive_element(element, ext, expr, elem_full, scope)
        elif not isinstance(value, dict):
            self.add("error", "structure", f"{expr} must be a JSON object", expr)
            return
        elif element.kind == "resource":
            rtype = value.get("resourceType")
            if not isinstance(rtype, str) or not self.r4.is_resource(rtype):
                self.add("error", "structure", f"{expr} must be a resource with a known "
                         "resourceType", expr)
                return
            if element.type != "Resource" and rtype != element.type:
                self.add("error", "structure", f"{expr} must be a {element.type}, not a "
                         f"{rtype}", expr)
                return
            if element.key == "contained":
                self.resource(value, rtype, expr, scope)
            else:
                in_bundle = scope.resource.get("resourceType") == "Bundle"
                self.resource(value, rtype, expr, None, scope.bundle if in_bundle else None)
            return
        else:
            definition, path = element.next  # type: ignore[misc]
            backbone = element.kind == "backbone"
            me = Holder(element.type, frozenset({element.path, elem_full, path}),
                        frozenset() if backbone else self._ancestors(element.type),
                        backbone=backbone,
                        url=value.get("url") if element.type == "Extension" else None)
            self.object(value, definition, path, expr, elem_full, me, scope, parent=parent,
                        child=element)
            if element.profile:
                self._invariants(self.r4.invariants(element.profile, element.type), value,
                                 expr, scope)
            if element.codings is not None:
                self._codings(element, value, expr)
        if element.invariants:
            focus = value if value is not None else fhirpath.Typed(None, None, ext)
            self._invariants(element.invariants, focus, expr, scope)

    # -- primitives -----------------------------------------------------------------------
    def _primitive(self, element: Child, value: Any, expr: str) -> None:
        t = element.type
        if t == "boolean":
            if not isinstance(value, bool):
                self.add("error", "value", f"{expr} must be a JSON boolean (true or false)",
                         expr)
            return
        if t in _INTEGERS:
            low, high = _INTEGERS[t]
            if isinstance(value, bool) or not isinstance(value, int):
                self.add("error", "value", f"{expr} must be a JSON integer", expr)
            elif not low <= value <= high:
                self.add("error", "value", f"{expr}: {value} is outside the range of {t} "
                         f"({low}..{high})", expr)
            return
        if t == "decimal":
            if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
                self.add("error", "value", f"{expr} must be a JSON number", expr)
            elif isinstance(value, float) and (value != value or abs(value) == float("inf")):
                self.add("error", "value", f"{expr} must be a finite number", expr)
            return
        if not isinstance(value, str):
            self.add("error", "value", f"{expr} must be a JSON string", expr)
            return
        if not value:
            self.add("error", "value", "Empty strings are not allowed in FHIR: omit the "
                     "element instead", expr)
            return
        if len(value) > MAX_STRING and t not in ("base64Binary", "xhtml"):
            self.add("error", "value", f"{expr} is longer than FHIR's limit of 1 MB", expr)
            return
        if _BAD_CHARS.search(value):
            self.add("error", "value", "The string contains a control character that FHIR "
                     "does not allow", expr)
            return
        if element.key == "id" and t == "string":
            if _WS.search(value):
                self.add("error", "value", f"Element id '{_short(value)}' must not contain "
                         "whitespace", expr)
            return
        if t == "xhtml":
            return
        regex = self.r4.primitive_regex.get(t)
        if regex is not None and regex.fullmatch(value) is None:
            self.add("error", "value", f"'{_short(value)}' is not a valid {t}", expr)
        elif t in ("date", "dateTime", "instant") and not _calendar_ok(value):
            self.add("error", "value", f"'{value}' is not a valid {t} (no such day)", expr)
        elif t == "base64Binary" and not _base64_ok(value):
            self.add("error", "value", f"{expr} is not valid base64", expr)
        elif t == "code" and element.codes is not None and value not in element.codes:
            allowed = ", ".join(sorted(element.codes))
            self.add("error", "code-invalid", f"'{_short(value)}' is not a valid code for "
                     f"{expr} (allowed: {allowed[:300]})", expr)
        elif element.key == "reference" and not reference_well_formed(value):
            self.add("error", "value", f"Malformed reference '{_short(value)}'", expr)

    def _primitive_element(self, element: Child, ext: Any, expr: str, elem_full: str,
                           scope: _Scope) -> None:
        """The `_name` object of a primitive: id and extensions only."""
        if not isinstance(ext, dict):
            self.add("error", "structure", f"_{element.key} must be a JSON object", expr)
            return
        me = Holder(element.type, frozenset({element.path, elem_full}),
                    self._ancestors(element.type))
        self.object(ext, "Element", "Element", expr, elem_full, me, scope)

    def _codings(self, element: Child, value: dict, expr: str) -> None:
        """A required binding that expands offline: some coding must be in the value set."""
        codings = [value] if element.type == "Coding" else value.get("coding") or []
        codings = [c for c in codings if isinstance(c, dict) and isinstance(c.get("code"), str)]
        if not codings:
            if element.type == "CodeableConcept":
                self.add("error", "code-invalid", f"{expr}: a code from the required value "
                         f"set {element.valueset} is needed", expr)
            return
        pairs = element.codings or frozenset()
        if any((c.get("system"), c["code"]) in pairs for c in codings):
            return
        shown = ", ".join(f"{c.get('system')}#{c['code']}" for c in codings)
        self.add("error", "code-invalid", f"{expr}: {shown} is not in the required value set "
                 f"{element.valueset}", expr)

    # -- invariants -----------------------------------------------------------------------
    def _invariants(self, invariants: list, focus: Any, expr: str, scope: _Scope) -> None:
        for inv in invariants:
            try:
                ok = fhirpath.holds(inv.expression.evaluate(focus, scope.env))
            except Exception as exc:  # noqa: BLE001 - a run-time FHIRPath error
                self.add("warning", "invariant", f"Invariant {inv.key} could not be "
                         f"evaluated: {exc}", expr)
                continue
            if not ok:
                severity = "error" if inv.severity == "error" else "warning"
                self.add(severity, "invariant", f"Constraint failed: {inv.key}: {inv.human}",
                         expr)

    # -- references and extensions --------------------------------------------------------
    def _reference(self, ref: dict, expr: str, scope: _Scope,
                   targets: frozenset[str] | None) -> None:
        target = ref.get("reference")
        if not isinstance(target, str):
            return
        if target.startswith("#"):
            if target != "#" and scope.resolve(target) is None:
                self.add("error", "invariant", "Constraint failed: ref-1: SHALL have a "
                         f"contained resource if a local reference is provided ('{target}' "
                         "names no contained resource)", expr)
            return
        m = REL_REF.match(target) or (_ABS_REF.search(target)
                                       if target.startswith(("http:", "https:")) else None)
        if m is None:
            return
        rtype = m.group(1)
        declared = ref.get("type")
        if isinstance(declared, str) and declared.rsplit("/", 1)[-1] != rtype:
            self.add("error", "value", f"Reference type '{declared}' does not match the "
                     f"referenced type '{rtype}'", expr)
        if targets and rtype not in targets and is_resource_type(rtype):
            self.add("error", "structure", f"A reference to {rtype} is not allowed here "
                     f"(allowed: {', '.join(sorted(targets))})", expr)

    def _extension(self, ext: dict, expr: str, parent: Holder) -> None:
        """ext-1, then the extension against its definition (core, or a shipped profile's
        extension), or a warning for an extension this server does not know."""
        has_value = any(k.startswith(("value", "_value")) for k in ext)
        if has_value == bool(ext.get("extension")):
            self.add("error", "invariant", "Constraint failed: ext-1: Must have either "
                     "extensions or value[x], not both", expr)
        url = ext.get("url")
        if not isinstance(url, str):
            return
        if parent.type == "Extension" and (":" not in url or _defines_sub(parent.url, url)):
            return  # a sub-extension: its parent's definition checks it
        modifier = expr.rsplit(".", 1)[-1].startswith("modifierExtension")
        definition = core().get(url)
        if definition is not None:
            self._extend(check_core(definition, url, ext, expr, parent, modifier))
            return
        if ":" not in url:
            self.add("error", "value", f"Extension url '{_short(url)}' must be absolute",
                     f"{expr}.url")
            return
        from profiles.validator import default_validator

        known = default_validator().extension_issues(url, ext, expr, parent)
        if known is not None:
            self._extend(known)
            return
        severity = "error" if self.strict else "warning"
        self.add(severity, "not-supported", f"Extension {url} is not known to this server; "
                 "it was not validated", expr)

    def _extend(self, issues: list[Issue]) -> None:
        room = MAX_ISSUES - len(self.issues)
        if room > 0:
            self.issues.extend(issues[:room])


def _defines_sub(parent_url: str | None, url: str) -> bool:
    if not parent_url:
        return True  # unknown parent: its sub-extensions cannot be judged
    definition = core().get(parent_url)
    if definition is not None:
        return url in (definition.get("sub") or {})
    from profiles.validator import default_validator

    return default_validator().defines_sub_extension(parent_url, url)


def _short(value: str) -> str:
    return value if len(value) <= 80 else value[:77] + "..."


def _calendar_ok(value: str) -> bool:
    if len(value) < 10:
        return True
    year, month, day = int(value[:4]), int(value[5:7]), int(value[8:10])
    return 1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]


def _base64_ok(value: str) -> bool:
    compact = "".join(value.split())
    if len(compact) % 4 or not _BASE64.match(compact):
        return False
    try:
        base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _collect_strings(node: Any, out: set[str]) -> None:
    """Every string starting with '#' in the tree (local references)."""
    if isinstance(node, dict):
        node = node.values()
    for value in node:
        if isinstance(value, str):
            if value.startswith("#"):
                out.add(value)
        elif isinstance(value, (dict, list)):
            _collect_strings(value, out)


def reference_well_formed(ref: str) -> bool:
    """A reference is a relative Type/id, an absolute URL, a urn:uuid/urn:oid, a #fragment,
    or a conditional reference Type?query (resolved only inside transactions)."""
    if not ref or ref != ref.strip():
        return False
    if ref.startswith("#"):
        return True
    if ref.startswith(("urn:uuid:", "urn:oid:")):
        return len(ref) > 9
    if ref.startswith(("http://", "https://")):
        return " " not in ref
    if "?" in ref:
        return is_resource_type(ref.split("?", 1)[0])
    m = REL_REF.match(ref)
    return bool(m) and is_resource_type(m.group(1))
