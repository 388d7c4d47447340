"""Generate, from the R4 definitions, a resource that breaks and one that keeps each core
invariant the base validator evaluates.

For an invariant on element P of type or resource D: a minimal valid host resource holding a
P element is built from the element model (required elements filled with sample values of
their types); then values for the elements the expression names (sample values, the
expression's own literals, numbers and dates on both sides of its comparisons) are tried at
P with a seeded search until the compiled invariant is false (the breaking resource) and until
it holds on a resource the whole base validator accepts (the keeping one). Invariants no
search reaches are listed by `generate()` as not generated, with the reason."""

from __future__ import annotations

import copy
import itertools
import random
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from profiles import fhirpath
from profiles.base_r4 import validate_base
from profiles.r4model import PRIMITIVE, Child, Invariant, model

SAMPLES: dict[str, list[Any]] = {
    "boolean": [True, False], "integer": [1, 0, -1, 101], "decimal": [1, 0, 101, -1, 0.5],
    "positiveInt": [1, 2], "unsignedInt": [0, 1, 2], "string": ["x", "*", "home"],
    "markdown": ["x"], "code": ["x"], "id": ["a1"], "uri": ["http://example.org/a"],
    "url": ["http://example.org/a"], "canonical": ["http://example.org/fhir/X"],
    "oid": ["urn:oid:1.2.3"], "uuid": ["urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"],
    "date": ["2020-01-02", "2020-01-01"],
    "dateTime": ["2020-01-02T10:00:00Z", "2020-01-01T10:00:00Z"],
    "instant": ["2020-01-02T10:00:00Z", "2020-01-01T10:00:00Z"], "time": ["10:00:00"],
    "base64Binary": ["AAAA"], "xhtml": ['<div xmlns="http://www.w3.org/1999/xhtml">x</div>'],
}
COMPLEX_SAMPLES: dict[str, list[Any]] = {
    "CodeableConcept": [{"text": "x"}], "Coding": [{"system": "http://example.org", "code": "x"}],
    "Reference": [{"display": "x"}], "Quantity": [{"value": 1}, {"value": 2}],
    "Period": [{"start": "2020-01-01"}], "Identifier": [{"value": "x"}],
    "HumanName": [{"family": "x"}], "Address": [{"city": "x"}],
    "ContactPoint": [{"system": "phone", "value": "1"}], "Attachment": [{"url": "http://a.b"}],
    "Annotation": [{"text": "x"}], "Range": [{"low": {"value": 1}}],
    "Ratio": [{"numerator": {"value": 1}, "denominator": {"value": 1}}],
    "Narrative": [{"status": "generated",
                   "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'}],
    "Meta": [{"versionId": "1"}], "Expression": [{"language": "text/fhirpath",
                                                  "expression": "true"}],
    "Money": [{"value": 1, "currency": "USD"}], "Age": [{"value": 1}],
    "Duration": [{"value": 1, "system": "http://unitsofmeasure.org", "code": "d"}],
    "Timing": [{"code": {"text": "x"}}], "Signature": [],
    "Extension": [{"url": "http://example.org/x", "valueString": "x"}],
}
ATTEMPTS = 600


@dataclass
class Case:
    """One invariant with the resource that breaks it and the one that keeps it."""

    key: str
    definition: str
    path: str
    breaking: dict | None
    keeping: dict | None
    note: str = ""


def _sample(child: Child, depth: int = 0) -> Any:
    if child.kind == PRIMITIVE:
        if child.codes:
            return sorted(child.codes)[0]
        return SAMPLES.get(child.type, ["x"])[0]
    if child.kind == "resource":
        return {"resourceType": "Basic", "code": {"text": "x"}}
    if child.codings:
        system, code = sorted(child.codings)[0]
        return {"coding": [{"system": system, "code": code}]} if \
            child.type == "CodeableConcept" else {"system": system, "code": code}
    if child.kind == "complex" and COMPLEX_SAMPLES.get(child.type):
        return copy.deepcopy(COMPLEX_SAMPLES[child.type][0])
    definition, path = child.next  # type: ignore[misc]
    return _minimal(definition, path, depth + 1)


def _minimal(definition: str, path: str, depth: int = 0) -> dict:
    """An object with every required element of (definition, path) filled in."""
    node = model().node(definition, path)
    out: dict[str, Any] = {}
    if node is None or depth > 6:
        return out
    for _label, keys in node.required:
        child = node.children[keys[0]]
        value = _sample(child, depth)
        out[child.key] = [value] if child.array else value
    if not out:  # ele-1: an element needs some content
        for child in node.children.values():
            if child.kind == PRIMITIVE and child.key not in ("id",) and not child.stem:
                value = _sample(child, depth)
                out[child.key] = [value] if child.array else value
                break
    return out


@cache
def _hosts() -> dict[str, tuple[str, str]]:
    """Datatype -> (resource type, element path) of a resource element of that type."""
    r4 = model()
    hosts: dict[str, tuple[str, str]] = {}
    preferred = ("Observation", "Patient", "Basic", "Task", "ServiceRequest", "Condition")
    names = [n for n in preferred] + sorted(n for n in r4.elements if r4.is_resource(n))
    for name in names:
        for path, row in r4.elements[name].items():
            types = row.get("t", [])
            if path.count(".") >= 1 and types:
                for t in types:
                    hosts.setdefault(t, (name, path))
                for prof in (row.get("q") or {}).values():
                    hosts.setdefault(prof, (name, path))
    return hosts


def _place(definition: str, inv_path: str, examples: dict[str, list[dict]]
           ) -> tuple[dict, list[str], str | None] | None:
    """(host resource, element steps from the resource to the node, the datatype the first
    step must take when it is a choice). The host is the smallest valid R4 example of the
    resource type when there is one (the valid side), else a minimal generated resource."""
    r4 = model()
    if r4.is_resource(definition):
        resource_type, el_path, wanted = definition, inv_path, None
    else:
        host = _hosts().get(definition)
        if host is None:
            return None
        resource_type, host_path = host
        el_path = host_path + inv_path[len(inv_path.split(".")[0]):]
        wanted = "Quantity" if definition in ("SimpleQuantity", "MoneyQuantity") else definition
    candidates = examples.get(resource_type) or []
    resource = copy.deepcopy(candidates[0]) if candidates else \
        {"resourceType": resource_type, **_minimal(resource_type, resource_type)}
    return resource, el_path.split(".")[1:], wanted


def _descend(resource: dict, steps: list[str], wanted: str | None
             ) -> tuple[dict, tuple[str, str]] | None:
    """Reach (or create, filling what each level requires) the element at `steps`; returns
    it with the (definition, path) its children are described by."""
    r4 = model()
    node, definition, path = resource, resource["resourceType"], resource["resourceType"]
    for step in steps:
        compiled = r4.node(definition, path)
        if compiled is None:
            return None
        child = compiled.children.get(step) or next(
            (c for c in compiled.children.values() if c.stem == step.removesuffix("[x]")
             and c.kind != PRIMITIVE and (wanted is None or c.type == wanted)), None)
        if child is None or child.kind == PRIMITIVE or child.next is None:
            return None
        if child.stem:  # one value per choice element: drop the others
            for key in [k for k in node if k.startswith(child.stem) and k != child.key]:
                if k_is_choice(key, child.stem):
                    node.pop(key)
        value = node.get(child.key)
        if value is None:
            value = _sample(child)
            node[child.key] = [value] if child.array else value
        node = node[child.key][0] if child.array else node[child.key]
        definition, path = child.next
    return node, (definition, path)


def k_is_choice(key: str, stem: str) -> bool:
    return len(key) > len(stem) and key[len(stem)].isupper()


def _names(expression: str) -> tuple[set[str], list[str], list[tuple[str, str]]]:
    """Identifiers, string literals and (system, code) pairs the expression uses."""
    names = set(re.findall(r"(?<![%'\w])([a-z][A-Za-z0-9]*)\b(?!\()", expression))
    literals = re.findall(r"'([^']*)'", expression)
    pairs = re.findall(r"system\s*=\s*'([^']+)'\s+and\s+\(?code\s*=\s*'([^']+)'", expression)
    return names, literals, pairs


def _options(child: Child, literals: list[str], pairs: list[tuple[str, str]]) -> list[Any]:
    out: list[Any] = [None]
    if child.kind == PRIMITIVE:
        values = list(SAMPLES.get(child.type, ["x"]))
        if child.type in ("code", "string", "uri", "id"):
            values += [v for v in literals if v and " " not in v]
        if child.codes:
            values = sorted(child.codes) + values
        out += values
    elif child.type == "CodeableConcept":
        out += [{"coding": [{"system": s, "code": c}]} for s, c in pairs]
        out += [_sample(child)]
    else:
        out += COMPLEX_SAMPLES.get(child.type, []) + [_sample(child)]
    return out


def _search(resource: dict, node: dict, node_def: tuple[str, str], inv: Invariant,
            want_break: bool, seed: int) -> dict | None:
    r4 = model()
    compiled = r4.node(*node_def)
    if compiled is None:
        return None
    names, literals, pairs = _names(inv.expression.text)
    children = [c for c in compiled.children.values()
                if (c.stem or c.key) in names or c.key in names]
    choices = [(c, _options(c, literals, pairs)) for c in children]
    rng = random.Random(seed)
    combos: list[list[Any]] = []
    if len(choices) <= 4:
        combos = [list(x) for x in itertools.product(*(opts for _c, opts in choices))]
        rng.shuffle(combos)
    for attempt in range(ATTEMPTS):
        picks = combos[attempt] if attempt < len(combos) else \
            [rng.choice(opts) for _c, opts in choices]
        candidate = copy.deepcopy(resource)
        target = _find_same(candidate, resource, node)
        stems = set()
        for (child, _opts), value in zip(choices, picks, strict=True):
            if child.stem:
                if child.stem in stems:
                    continue
                for key in [k for k in target if k.startswith(child.stem)]:
                    if key != child.key and key[len(child.stem):][:1].isupper():
                        target.pop(key)
            target.pop(child.key, None)
            if value is not None:
                target[child.key] = [copy.deepcopy(value)] if child.array else \
                    copy.deepcopy(value)
                if child.stem:
                    stems.add(child.stem)
        env = fhirpath.Env(candidate, candidate)
        try:
            holds = fhirpath.holds(inv.expression.evaluate(target, env))
        except Exception:  # noqa: BLE001 - a candidate the expression cannot evaluate
            continue
        if want_break and not holds:
            return candidate
        if not want_break and holds and not [
                i for i in validate_base(candidate) if i.severity == "error"]:
            return candidate
    return None


def _find_same(copied: Any, original: Any, wanted: Any) -> Any:
    """The object in `copied` at the position `wanted` has in `original`."""
    if original is wanted:
        return copied
    if isinstance(original, dict):
        for key, value in original.items():
            found = _find_same(copied[key], value, wanted)
            if found is not None:
                return found
    elif isinstance(original, list):
        for i, value in enumerate(original):
            found = _find_same(copied[i], value, wanted)
            if found is not None:
                return found
    return None


def _valid_examples(examples: dict[str, dict]) -> dict[str, list[dict]]:
    """Valid R4 examples by resource type, smallest first."""
    out: dict[str, list[dict]] = {}
    for resource in sorted(examples.values(), key=lambda r: len(str(r))):
        if not isinstance(resource, dict) or len(str(resource)) > 20_000:
            continue
        rtype = resource.get("resourceType")
        if rtype in out and len(out[rtype]) >= 1:
            continue
        if not [i for i in validate_base(resource) if i.severity == "error"]:
            out.setdefault(rtype, []).append(resource)
    return out


@cache
def generate() -> tuple[Case, ...]:
    """A Case for every core invariant evaluated by FHIRPath (see the module docstring)."""
    from tests.reference_data import r4_examples

    r4 = model()
    hosts = _valid_examples(r4_examples())
    cases: list[Case] = []
    for (definition, inv_path), items in sorted(r4._constraints.items()):
        kind = r4.kinds.get(definition, ["", None, False])
        if kind[0] == "logical" or (kind[0] == "resource" and kind[2]):
            continue  # abstract / logical definitions are never instantiated
        for c in items:
            inv = next(i for i in r4.invariants(definition, inv_path) if i.key == c["key"])
            placed = _place(definition, inv_path, hosts)
            if placed is None:
                cases.append(Case(c["key"], definition, inv_path, None, None, "no host"))
                continue
            resource, steps, wanted = placed
            reached = _descend(resource, steps, wanted) if steps else \
                (resource, (definition, inv_path))
            if reached is None:
                cases.append(Case(c["key"], definition, inv_path, None, None, "no path"))
                continue
            node, node_def = reached
            seed = sum(map(ord, definition + c["key"]))
            breaking = _search(resource, node, node_def, inv, True, seed)
            keeping = _search(resource, node, node_def, inv, False, seed + 1)
            cases.append(Case(c["key"], definition, inv_path, breaking, keeping,
                              "" if breaking and keeping else "search found no instance"))
    return tuple(cases)
