"""The R4 element model the base validator walks: for each type (and each backbone element
inside it) which JSON properties exist, their types and cardinality, the invariants that
apply there, and the primitive formats. Built once from `profiles/base/r4-elements.json.gz`
(generated from the R4 StructureDefinitions by `profiles.devtools.build_data`)."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any

from profiles import fhirpath
from profiles.base_data import r4_elements

# A relative reference to a resource: Type/id, optionally with /_history/version
REL_REF = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(/_history/[A-Za-z0-9\-.]{1,64})?$")
PRIMITIVE = "primitive"


@dataclass(frozen=True)
class Invariant:
    """A core invariant: key, severity, message and its compiled FHIRPath expression."""

    key: str
    severity: str
    human: str
    expression: fhirpath.Expression


@dataclass
class Child:
    """One JSON property of an element: `valueQuantity`, `name`, `_birthDate`'s owner."""

    key: str  # JSON property name
    step: str  # FHIRPath step for issue expressions: "name" or "value.ofType(Quantity)"
    path: str  # element path in its definition: "Observation.value[x]"
    type: str  # type code: "string", "Quantity", "BackboneElement", "Resource", ...
    kind: str  # "primitive", "complex", "backbone", "resource"
    array: bool
    stem: str | None = None  # choice stem ("value") when a choice element
    targets: frozenset[str] | None = None  # Reference target types
    profile: str | None = None  # type profile with its own invariants (SimpleQuantity)
    codes: frozenset[str] | None = None  # required codes (code elements)
    codings: frozenset[tuple[str, str]] | None = None  # required (system, code) pairs
    valueset: str | None = None
    next: tuple[str, str] | None = None  # (definition, path) of its children
    # invariants declared on this element's path (a backbone's are on its Node)
    invariants: list[Invariant] = field(default_factory=list)


@dataclass
class Node:
    """The properties and rules of one element (a type's root or a backbone element)."""

    children: dict[str, Child] = field(default_factory=dict)
    required: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    invariants: list[Invariant] = field(default_factory=list)


class R4Model:
    """Element tables of every R4 type and resource, compiled on first use per element."""

    def __init__(self) -> None:
        data = r4_elements()
        self.elements: dict[str, dict[str, Any]] = data["elements"]
        self.kinds: dict[str, list[Any]] = data["kinds"]
        # ASCII classes as in the Java regexes the definitions were written for (\s, \S)
        self.primitive_regex = {name: re.compile(rx, re.ASCII)
                                for name, rx in data["primitives"].items() if rx}
        self._constraints: dict[tuple[str, str], list[dict[str, str]]] = {}
        for name, items in data["constraints"].items():
            for c in items:
                self._constraints.setdefault((name, c["path"]), []).append(c)
        self._nodes: dict[tuple[str, str], Node] = {}
        self._lock = threading.Lock()

    def is_resource(self, name: str) -> bool:
        kind = self.kinds.get(name)
        return kind is not None and kind[0] == "resource" and not kind[2]

    def is_primitive(self, name: str) -> bool:
        kind = self.kinds.get(name)
        return kind is not None and kind[0] == "primitive-type"

    def invariants(self, name: str, path: str) -> list[Invariant]:
        """Compiled invariants declared on `path` of definition `name`."""
        out = []
        for c in self._constraints.get((name, path), []):
            out.append(Invariant(c["key"], c["severity"], c["human"],
                                 fhirpath.compile_expression(c["expression"])))
        return out

    def node(self, name: str, path: str) -> Node | None:
        """The compiled element `path` of definition `name` (None when unknown)."""
        key = (name, path)
        found = self._nodes.get(key)
        if found is None:
            table = self.elements.get(name)
            if table is None or path not in table:
                return None
            found = self._build(name, path, table)
            with self._lock:
                self._nodes[key] = found
        return found

    def _build(self, name: str, path: str, table: dict[str, Any]) -> Node:
        node = Node(invariants=self.invariants(name, path))
        if path == name:  # a type's root also carries the invariants of its ancestors
            parent = self.kinds.get(name, [None, None])[1]
            while parent and parent in self.kinds:
                node.invariants.extend(self.invariants(parent, parent))
                parent = self.kinds[parent][1]
        prefix = path + "."
        depth = path.count(".") + 1
        for el_path, row in table.items():
            if not el_path.startswith(prefix) or el_path.count(".") != depth:
                continue
            name_part = el_path[len(prefix):]
            keys: list[str] = []
            if name_part.endswith("[x]"):
                stem = name_part[:-3]
                for t in row["t"]:
                    child = self._child(name, el_path, row, stem + t[0].upper() + t[1:], t,
                                        f"{stem}.ofType({t})", stem)
                    node.children[child.key] = child
                    keys.append(child.key)
            else:
                types = row["t"]
                t = types[0] if types else "BackboneElement"
                child = self._child(name, el_path, row, name_part, t, name_part, None)
                node.children[child.key] = child
                keys.append(child.key)
            if row["n"] > 0:
                node.required.append((name_part, tuple(keys)))
        return node

    def _child(self, name: str, el_path: str, row: dict[str, Any], key: str, type_: str,
               step: str, stem: str | None) -> Child:
        if type_ == "System.String":
            type_ = "string"
        array = row["x"] != "1"
        if "r" in row:
            kind, nxt = "backbone", (name, row["r"])
        elif type_ in ("BackboneElement", "Element") and row["t"]:
            kind, nxt = "backbone", (name, el_path)
        elif type_ == "Resource" or self.is_resource(type_):
            kind, nxt = "resource", None
        elif self.is_primitive(type_):
            kind, nxt = PRIMITIVE, None
        else:
            kind, nxt = "complex", (type_, type_)
        child = Child(key=key, step=step, path=el_path, type=type_, kind=kind, array=array,
                      stem=stem, next=nxt)
        if kind != "backbone" or "r" in row:  # a contentReference keeps its own invariants
            child.invariants = self.invariants(name, el_path)
        if row.get("p") and "Resource" not in row["p"]:
            child.targets = frozenset(row["p"])
        if row.get("q", {}).get(type_):
            child.profile = row["q"][type_]
        binding = row.get("b")
        if binding:
            child.valueset = binding["vs"]
            if type_ == "code":
                child.codes = frozenset(code for _s, code in binding["codes"])
            elif type_ in ("Coding", "CodeableConcept"):
                child.codings = frozenset((s, c) for s, c in binding["codes"])
        return child


_MODEL: R4Model | None = None
_MODEL_LOCK = threading.Lock()


def model() -> R4Model:
    """The process-wide R4 model (loaded on first use)."""
    global _MODEL
    if _MODEL is None:
        with _MODEL_LOCK:
            if _MODEL is None:
                _MODEL = R4Model()
    return _MODEL
