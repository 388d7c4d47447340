"""The OperationDefinitions of the operations this server defines (one JSON file each,
published at /OperationDefinition/[id] and referenced from the CapabilityStatement), and the
parameter types they declare: a GET invocation's query becomes a typed Parameters resource
for handlers that read one, and a POST Parameters body of primitive values becomes query
parameters for handlers that read those (FHIR: operations that change nothing may be invoked
by GET or POST)."""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any

from fhir_server.errors import FhirError, Issue

_HERE = Path(__file__).resolve().parent
_INTEGERS = {"integer", "positiveInt", "unsignedInt"}


@cache
def _load() -> tuple[dict, ...]:
    return tuple(json.loads(p.read_text(encoding="utf-8"))
                 for p in sorted(_HERE.glob("OperationDefinition-*.json")))


def definitions() -> list[dict]:
    """Fresh copies of every OperationDefinition we publish."""
    return [json.loads(json.dumps(d)) for d in _load()]


def by_url(url: str) -> dict | None:
    """The published OperationDefinition with this canonical URL (shared, do not change)."""
    return next((d for d in _load() if d["url"] == url.partition("|")[0]), None)


def parameters_from_query(definition: dict, params: list[tuple[str, str]]) -> dict:
    """GET `?name=value&...` as a Parameters resource, each value typed as the definition
    declares (400 for an unknown name, a value of the wrong type, or a complex parameter)."""
    declared = {p["name"]: p for p in definition.get("parameter", []) if p["use"] == "in"}
    out: list[dict[str, Any]] = []
    issues: list[Issue] = []
    for name, raw in params:
        spec = declared.get(name)
        if spec is None:
            issues.append(Issue("error", "not-supported", f"${definition['code']} has no "
                                f"input parameter '{name}'", [name]))
            continue
        type_ = spec.get("type", "string")
        value = _typed(type_, raw)
        if value is None:
            issues.append(Issue("error", "value", f"'{raw}' is not a valid {type_} for "
                                f"'{name}'", [name]))
            continue
        out.append({"name": name, f"value{type_[0].upper()}{type_[1:]}": value})
    if issues:
        raise FhirError(400, issues[0].code, issues[0].diagnostics, issues=issues)
    return {"resourceType": "Parameters", "parameter": out} if out else \
        {"resourceType": "Parameters"}


def query_from_parameters(body: Any) -> list[tuple[str, str]]:
    """A POSTed Parameters resource of primitive values as query-style parameters."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise FhirError(400, "invalid", "The operation takes a Parameters resource",
                        "Parameters")
    out: list[tuple[str, str]] = []
    for i, param in enumerate(body.get("parameter") or []):
        values = [(k, v) for k, v in param.items() if k.startswith("value")]
        if len(values) != 1 or isinstance(values[0][1], (dict, list)):
            raise FhirError(400, "invalid", f"Parameter '{param.get('name')}' must have one "
                            "primitive value", f"Parameters.parameter[{i}]")
        value = values[0][1]
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        out.append((str(param.get("name")), text))
    return out


def _typed(type_: str, raw: str) -> Any:
    if type_ == "boolean":
        return {"true": True, "false": False}.get(raw)
    if type_ in _INTEGERS:
        try:
            return int(raw)
        except ValueError:
            return None
    if type_ == "decimal":
        try:
            return Decimal(raw)
        except InvalidOperation:
            return None
    if type_[0].isupper():
        return None  # a complex type: POST only
    return raw or None
