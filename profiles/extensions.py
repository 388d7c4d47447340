"""Extensions checked against their definitions: the R4 core extensions
(`profiles/base/r4-extensions.json.gz`, built from the R4 `extension-definitions.json`) for
value type, reference targets, required codes, where they may be used (context), modifier
or not, and the sub-extensions of complex extensions; the extensions of our shipped profiles
through the profile validator. An extension this server does not know is a warning, or an
error when `FHIR_SERVER_STRICT_PROFILES` is on."""

from __future__ import annotations

import gzip
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fhir_server.errors import Issue
from profiles.fhirpath import choice_type

BASE = Path(__file__).resolve().parent / "base"
ANY_ELEMENT = frozenset({"Element", "Base"})
# HL7's publishing metadata: R4 defines these for StructureDefinition (or ElementDefinition
# parts) only, yet HL7's own CodeSystems, ValueSets, OperationDefinitions and element types
# carry them throughout the specification. Used elsewhere they are a warning, not an error.
_LENIENT_CONTEXT = frozenset(f"http://hl7.org/fhir/StructureDefinition/{name}" for name in (
    "structuredefinition-fmm", "structuredefinition-fmm-no-warnings", "structuredefinition-wg",
    "structuredefinition-standards-status", "structuredefinition-normative-version",
    "structuredefinition-ballot-status", "structuredefinition-fhir-type",
    "structuredefinition-json-type", "structuredefinition-xml-type",
    "structuredefinition-rdf-type", "regex"))


@dataclass(frozen=True)
class Holder:
    """Where an extension sits: the holder's type, its element paths (in its definition and
    from the resource root) and the type's ancestors."""

    type: str
    paths: frozenset[str]
    ancestors: frozenset[str]
    resource_root: bool = False
    backbone: bool = False
    url: str | None = None  # for an Extension: its url (its sub-extensions are its own)

    def allows(self, contexts: list[list[str]]) -> bool:
        for kind, expression in contexts:
            if kind != "element":
                return True  # fhirpath / extension contexts: not judged here
            if expression in ANY_ELEMENT or expression == self.type or \
                    expression in self.paths or expression in self.ancestors:
                return True
            if self.resource_root and expression in ("Resource", "DomainResource"):
                return True
            if self.backbone and expression == "BackboneElement":
                return True
        return False


class CoreExtensions:
    """The R4 core extension definitions, compacted."""

    def __init__(self, path: Path = BASE / "r4-extensions.json.gz") -> None:
        with gzip.open(path) as fh:
            self.defs: dict[str, dict[str, Any]] = json.load(fh)

    def get(self, url: str) -> dict[str, Any] | None:
        return self.defs.get(url.partition("|")[0])


_CORE: CoreExtensions | None = None
_LOCK = threading.Lock()


def core() -> CoreExtensions:
    global _CORE
    if _CORE is None:
        with _LOCK:
            if _CORE is None:
                _CORE = CoreExtensions()
    return _CORE


def value_of(ext: dict[str, Any]) -> tuple[str, str, Any] | None:
    """(JSON key, FHIR type, value) of an extension's value[x], if it has one."""
    for key, value in ext.items():
        if key.startswith("value") and len(key) > 5:
            t = choice_type(key)
            if t is not None:
                return key, t, value
    for key in ext:
        if key.startswith("_value") and key[1:] not in ext:
            t = choice_type(key[1:])
            if t is not None:
                return key[1:], t, None
    return None


def check_core(definition: dict[str, Any], url: str, ext: dict[str, Any], expr: str,
               holder: Holder, modifier: bool) -> list[Issue]:
    """Issues of one extension instance against its core definition."""
    issues: list[Issue] = []
    if definition["mod"] and not modifier:
        issues.append(Issue("error", "structure", f"Extension {url} is a modifier extension "
                            "and must be in modifierExtension", [expr]))
    elif modifier and not definition["mod"]:
        issues.append(Issue("error", "structure", f"Extension {url} is not a modifier "
                            "extension and must not be in modifierExtension", [expr]))
    if not holder.allows(definition["ctx"]):
        allowed = ", ".join(e for _k, e in definition["ctx"])
        severity = "warning" if url in _LENIENT_CONTEXT else "error"
        issues.append(Issue(severity, "structure", f"Extension {url} is not allowed here "
                            f"(allowed on: {allowed}; this element is a {holder.type})",
                            [expr]))
    issues.extend(_value_issues(definition, url, ext, expr))
    subs = definition.get("sub")
    inner = [e for e in ext.get("extension") or [] if isinstance(e, dict)]
    if subs is None:
        return issues
    counts: dict[str, int] = {}
    for i, sub in enumerate(inner):
        sub_url = sub.get("url")
        where = f"{expr}.extension[{i}]"
        if not isinstance(sub_url, str) or sub_url not in subs:
            issues.append(Issue("error", "structure",
                                f"Sub-extension '{sub_url}' is not defined by {url} "
                                f"(allowed: {', '.join(sorted(subs))})", [where]))
            continue
        counts[sub_url] = counts.get(sub_url, 0) + 1
        issues.extend(_value_issues(subs[sub_url], f"{url}#{sub_url}", sub, where))
    for sub_url, rule in subs.items():
        n = counts.get(sub_url, 0)
        if n < rule.get("n", 0):
            issues.append(Issue("error", "required", f"Extension {url} requires the "
                                f"sub-extension '{sub_url}'", [expr]))
        elif rule.get("x", "*") != "*" and n > int(rule["x"]):
            issues.append(Issue("error", "structure", f"Extension {url} allows at most "
                                f"{rule['x']} '{sub_url}' sub-extension(s); found {n}", [expr]))
    return issues


def _value_issues(rule: dict[str, Any], url: str, ext: dict[str, Any], expr: str
                  ) -> list[Issue]:
    found = value_of(ext)
    allowed = rule.get("v", [])
    if found is None:
        if allowed and rule.get("vn", 0) > 0 and not ext.get("extension"):
            return [Issue("error", "required", f"Extension {url} requires a value "
                          f"({', '.join(allowed)})", [expr])]
        return []
    key, type_, value = found
    where = f"{expr}.value.ofType({type_})"
    if not allowed:
        return [Issue("error", "structure", f"Extension {url} is a complex extension and "
                      "has no value[x]", [where])]
    if type_ not in allowed:
        return [Issue("error", "structure", f"Extension {url} allows the value types "
                      f"{', '.join(allowed)}, not {type_}", [where])]
    issues = []
    targets = rule.get("t")
    if targets and type_ == "Reference" and isinstance(value, dict):
        from profiles.validator import reference_type

        rtype = reference_type(value)
        if rtype and rtype not in targets:
            issues.append(Issue("error", "structure", f"Extension {url}: a reference to "
                                f"{rtype} is not allowed (allowed: {', '.join(targets)})",
                                [where]))
    binding = rule.get("b")
    if binding and value is not None:
        problem = _binding_problem(binding, type_, value)
        if problem:
            issues.append(Issue("error", "code-invalid", f"Extension {url}: {problem}",
                                [where]))
    return issues


def _binding_problem(binding: dict[str, Any], type_: str, value: Any) -> str | None:
    pairs = {(s, c) for s, c in binding["codes"]}
    if type_ == "code":
        if isinstance(value, str) and value not in {c for _s, c in pairs}:
            return f"'{value}' is not in the required value set {binding['vs']}"
        return None
    codings = [value] if type_ == "Coding" else (value.get("coding") or [])
    codings = [c for c in codings if isinstance(c, dict) and "code" in c]
    if codings and not any((c.get("system"), c.get("code")) in pairs for c in codings):
        shown = ", ".join(f"{c.get('system')}#{c.get('code')}" for c in codings)
        return f"{shown} is not in the required value set {binding['vs']}"
    return None
