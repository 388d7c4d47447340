"""Base R4 structural validation: datatypes, cardinality of the core spec, unknown elements,
ids and references. Profile rules (Gravity, US Core) are applied on top by `validator.py`.

R4B models of fhir.resources validate the 129 R4 types that R4B kept (R4B is R4-compatible
for them); the 18 R4 types R4B dropped (MedicinalProduct*, Substance*, *EvidenceSynthesis)
are validated with the official R4 JSON Schema definitions shipped in fhir_server/data.
"""

from __future__ import annotations

import gzip
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from fhir_server.errors import Issue
from fhir_server.resource_types import is_resource_type

ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_DATA = Path(__file__).resolve().parents[1] / "fhir_server" / "data"
_LEGACY_SCHEMA = _DATA / "r4_schema_legacy_types.json.gz"
_CODE_ENUMS = _DATA / "r4_code_enums.json.gz"
# A relative literal reference: Type/id or Type/id/_history/vid (also accepts fragments).
_REL_REF = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(/_history/[A-Za-z0-9\-.]{1,64})?$")


def validate_base(resource: Any, *, expected_type: str | None = None) -> list[Issue]:
    """Structural R4 validation. Returns error issues (empty list = valid)."""
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
    issues: list[Issue] = []
    res_id = resource.get("id")
    if res_id is not None and (not isinstance(res_id, str) or not ID_RE.match(res_id)):
        issues.append(Issue("error", "value",
                            "id must be 1-64 characters from A-Z a-z 0-9 - .", [f"{res_type}.id"]))
    issues.extend(_model_issues(res_type, resource))
    if not issues:
        _code_issues(_code_graph(), res_type, resource, res_type, issues)
    issues.extend(_reference_issues(resource, res_type))
    return issues


@lru_cache(maxsize=1)
def _code_graph() -> dict[str, dict[str, tuple[str, object]]]:
    """definition -> element -> ("enum", allowed codes) | ("ref", definition name)."""
    raw = json.loads(gzip.decompress(_CODE_ENUMS.read_bytes()))
    return {name: {prop: (kind, frozenset(target) if kind == "enum" else target)
                   for prop, (kind, target) in props.items()}
            for name, props in raw.items()}


def _code_issues(graph: dict, definition: str, node: Any, path: str, issues: list[Issue]) -> None:
    """Codes of required bindings in base R4 (e.g. Patient.gender) must be in their list."""
    props = graph.get(definition)
    if not props or not isinstance(node, dict):
        return
    for key, value in node.items():
        spec = props.get(key)
        if spec is None:
            continue
        kind, target = spec
        many = isinstance(value, list)
        for i, item in enumerate(value if many else [value]):
            where = f"{path}.{key}[{i}]" if many else f"{path}.{key}"
            if kind == "enum":
                if isinstance(item, str) and item not in target:  # type: ignore[operator]
                    allowed = ", ".join(sorted(target))  # type: ignore[arg-type]
                    issues.append(Issue("error", "code-invalid",
                                        f"'{item}' is not a valid code for {where} "
                                        f"(allowed: {allowed[:300]})", [where]))
            elif target == "ResourceList":
                if isinstance(item, dict) and isinstance(item.get("resourceType"), str):
                    _code_issues(graph, item["resourceType"], item, where, issues)
            else:
                _code_issues(graph, target, item, where, issues)  # type: ignore[arg-type]


def _model_issues(res_type: str, resource: dict) -> list[Issue]:
    model = _model_class(res_type)
    if model is None:
        return _schema_issues(res_type, resource)
    try:
        model.model_validate(resource)
    except Exception as exc:  # pydantic.ValidationError, or a model bug on odd input
        errors = getattr(exc, "errors", None)
        if not callable(errors):
            return [Issue("error", "structure", f"Invalid {res_type}: {exc}", [res_type])]
        return [_pydantic_issue(res_type, err) for err in errors()[:50]]
    return []


@lru_cache(maxsize=256)
def _model_class(res_type: str):  # type: ignore[no-untyped-def]
    from fhir.resources.R4B import get_fhir_model_class

    try:
        return get_fhir_model_class(res_type)
    except Exception:  # noqa: BLE001 - not an R4B type
        return None


def _pydantic_issue(res_type: str, err: dict) -> Issue:
    path = loc_to_fhirpath(res_type, err.get("loc", ()))
    kind = err.get("type", "")
    message = str(err.get("msg", "invalid value"))
    if kind == "extra_forbidden":
        return Issue("error", "structure", f"Unknown element '{path}'", [path])
    if kind == "missing" or "is required" in message:
        return Issue("error", "required", f"Missing required element '{path}'", [path])
    return Issue("error", "value", f"Invalid value at '{path}': {message}", [path])


def loc_to_fhirpath(res_type: str, loc: tuple | list) -> str:
    """Turn a pydantic error location into a FHIRPath expression like Patient.name[0].given."""
    out = res_type
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str):
            if part.startswith("function-after") or part.startswith("function-"):
                continue
            name = part[:-2] if part.endswith("__ext") else part
            out += f".{name}"
    return out


@lru_cache(maxsize=1)
def _legacy_schema() -> dict:
    return json.loads(gzip.decompress(_LEGACY_SCHEMA.read_bytes()))


@lru_cache(maxsize=32)
def _legacy_validator(res_type: str):  # type: ignore[no-untyped-def]
    import jsonschema

    schema = dict(_legacy_schema())
    schema["$ref"] = f"#/definitions/{res_type}"
    return jsonschema.Draft6Validator(schema)


def _schema_issues(res_type: str, resource: dict) -> list[Issue]:
    issues = []
    for err in list(_legacy_validator(res_type).iter_errors(resource))[:50]:
        path = loc_to_fhirpath(res_type, list(err.absolute_path))
        if err.validator == "additionalProperties" and isinstance(err.instance, dict):
            known = err.schema.get("properties", {})
            for extra in sorted(k for k in err.instance if k not in known):
                issues.append(Issue("error", "structure", f"Unknown element '{path}.{extra}'",
                                    [f"{path}.{extra}"]))
        elif err.validator == "required":
            issues.append(Issue("error", "required", f"{err.message} at '{path}'", [path]))
        else:
            issues.append(Issue("error", "structure", f"Invalid value at '{path}': {err.message}",
                                [path]))
    return issues


_BAD_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _reference_issues(resource: dict, res_type: str) -> list[Issue]:
    """One walk over the tree: references well formed, strings free of characters FHIR
    forbids (they cannot exist in XML either), no `fhir_comments`, narratives that are an
    XHTML div."""
    issues: list[Issue] = []
    _walk(resource, res_type, issues)
    return issues[:50]


def _walk(node: Any, path: str, issues: list[Issue]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            child = f"{path}.{key}"
            if key == "fhir_comments":
                issues.append(Issue("error", "structure", "fhir_comments is not allowed",
                                    [child]))
            elif isinstance(value, str):
                _check_string(key, value, child, issues)
            elif isinstance(value, (dict, list)):
                _walk(value, child, issues)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            child = f"{path}[{i}]"
            if isinstance(value, str):
                _check_string("", value, child, issues)
            else:
                _walk(value, child, issues)


def _check_string(key: str, value: str, path: str, issues: list[Issue]) -> None:
    if not value:
        issues.append(Issue("error", "value", "Empty strings are not allowed in FHIR: omit the "
                            "element instead", [path]))
    elif _BAD_CHARS.search(value):
        issues.append(Issue("error", "value", "The string contains a control character that "
                            "FHIR does not allow", [path]))
    elif key == "reference" and not reference_well_formed(value):
        issues.append(Issue("error", "value", f"Malformed reference '{value[:100]}'", [path]))
    elif key == "div" and path.endswith(".text.div") and not _narrative_ok(value):
        issues.append(Issue("error", "value", "Narrative div must be well-formed XHTML: one "
                            '<div xmlns="http://www.w3.org/1999/xhtml"> element', [path]))


def _narrative_ok(div: str) -> bool:
    from fhir_server.errors import FhirError
    from fhir_server.formats.xhtml import raw_div

    try:
        raw_div(div)
    except (FhirError, ValueError):
        return False
    return True


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
    m = _REL_REF.match(ref)
    return bool(m) and is_resource_type(m.group(1))
