"""Compile a StructureDefinition (with its parent chain down to the base R4 type) into a tree of
``Node`` objects that the validator walks.  Each profile is compiled once and cached."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from profiles import fhirpath
from profiles.loader import FHIR_SD, ProfileRegistry

log = logging.getLogger(__name__)

PRIMITIVES = {
    "boolean", "integer", "string", "decimal", "uri", "url", "canonical", "base64Binary",
    "instant", "date", "dateTime", "time", "code", "oid", "id", "markdown", "unsignedInt",
    "positiveInt", "uuid", "xhtml",
}


@dataclass
class Constraint:
    """A compiled FHIRPath invariant (`compiled` is None when it cannot be parsed)."""

    key: str
    severity: str
    human: str
    expression: str
    compiled: fhirpath.Expression | None


@dataclass
class Node:
    """One element of a compiled profile."""

    name: str  # element name as in the instance, e.g. "input" or "value[x]"
    path: str  # base path, e.g. "Task.input"
    min: int = 0
    max: int | None = None  # None = unbounded
    base_max: int | None = None
    base_types: list[str] = field(default_factory=list)
    types: list[str] | None = None  # allowed type codes when restricted by the profile
    targets: list[str] | None = None  # allowed Reference target resource types
    target_profiles: list[str] = field(default_factory=list)
    ext_profile: str | None = None
    fixed: Any = None
    has_fixed: bool = False
    pattern: Any = None
    has_pattern: bool = False
    binding: tuple[str, str] | None = None  # (strength, valueSet)
    constraints: list[Constraint] = field(default_factory=list)
    discriminators: list[tuple[str, str]] = field(default_factory=list)
    slicing_rules: str = "open"
    slices: list[Node] = field(default_factory=list)
    slice_name: str | None = None
    type_slices: dict[str, Node] = field(default_factory=dict)  # "Quantity" -> node
    children: dict[str, Node] = field(default_factory=dict)
    must_support: bool = False

    # Derived values, computed on first use (after compilation finished).
    @cached_property
    def is_choice(self) -> bool:
        return self.name.endswith("[x]")

    @cached_property
    def stem(self) -> str:
        return self.name[:-3] if self.is_choice else self.name

    @cached_property
    def is_array(self) -> bool:
        return self.base_max is None or self.base_max > 1

    @cached_property
    def is_primitive(self) -> bool:
        return len(self.base_types) == 1 and self.base_types[0] in PRIMITIVES

    @cached_property
    def choice_keys(self) -> list[tuple[str, str]]:
        """(JSON property name, type code) for each type of a choice element."""
        return [(self.stem + t[0].upper() + t[1:], t) for t in self.base_types]

    @cached_property
    def allowed_types(self) -> set[str]:
        """Type codes this (choice) element accepts, including its type slices."""
        return set(self.types or []) | {t for t in self.base_types
                                        if t[0].upper() + t[1:] in self.type_slices}


@dataclass
class CompiledProfile:
    """A profile ready for validation."""

    url: str
    type: str
    root: Node
    chain: list[str]


def _max(value: str | None) -> int | None:
    if value in (None, "*"):
        return None
    return int(value)


class Compiler:
    """Builds and caches CompiledProfile objects from a ProfileRegistry."""

    def __init__(self, reg: ProfileRegistry) -> None:
        self.reg = reg
        self._cache: dict[str, CompiledProfile] = {}

    def get(self, url: str) -> CompiledProfile | None:
        url = url.partition("|")[0]
        cp = self._cache.get(url)
        if cp is None and self.reg.get(url) is not None:
            cp = self._compile(url)
            self._cache[url] = cp
        return cp

    # -- base element data ------------------------------------------------------------------
    def base_row(self, path: str) -> dict[str, Any] | None:
        """Element data for a base path, following datatypes and contentReferences."""
        parts = path.split(".")
        table = self.reg.base_elements.get(parts[0])
        if table is None:
            return None
        cur_type, i = parts[0], 1
        prefix = parts[0]
        while i < len(parts):
            cand = f"{prefix}.{parts[i]}"
            row = table.get(cand)
            if row is None:
                return None
            if "r" in row:  # contentReference: continue inside the referenced element
                ref = row["r"]
                row = {**table.get(ref, {}), "n": row["n"], "x": row["x"]}
                if i == len(parts) - 1:
                    return row
                prefix = ref
                i += 1
                continue
            if i == len(parts) - 1:
                return row
            types = row.get("t", [])
            if len(types) == 1 and types[0] not in ("BackboneElement", "Element") and \
                    types[0] in self.reg.base_elements:
                cur_type = types[0]
                table = self.reg.base_elements[cur_type]
                prefix = cur_type
            else:
                prefix = cand
            i += 1
        return table.get(prefix)

    # -- compilation ------------------------------------------------------------------------
    def _chain(self, url: str) -> list[dict[str, Any]]:
        chain = []
        cur = self.reg.get(url)
        while cur is not None:
            chain.append(cur)
            parent = cur.get("baseDefinition", "")
            cur = self.reg.get(parent) if not parent.startswith(FHIR_SD) else None
        return list(reversed(chain))

    def _compile(self, url: str) -> CompiledProfile:
        chain = self._chain(url)
        rtype = chain[-1]["type"]
        merged: dict[str, dict[str, Any]] = {}
        for sd in chain:
            for el in sd["differential"]["element"]:
                cur = merged.setdefault(el["id"], {})
                cur.update(el)
                if "constraint" in el and len(chain) > 1:
                    prev = [c for c in cur.get("_constraints", []) if c["key"] not in
                            {x["key"] for x in el["constraint"]}]
                    cur["_constraints"] = prev + el["constraint"]
                elif "constraint" in el:
                    cur["_constraints"] = list(el["constraint"])
        root = Node(name=rtype, path=rtype, base_max=1, base_types=[rtype])
        is_resource = chain[-1].get("kind") == "resource"
        if is_resource:
            for key, b in self.reg.base_bindings.items():
                if key.startswith(rtype + "."):
                    merged.setdefault(key, {"id": key, "path": key})
                    merged[key].setdefault("binding", b)
        nodes: dict[str, Node] = {rtype: root}
        for eid in sorted(merged, key=lambda x: x.count(".")):
            el = merged[eid]
            if eid == rtype:
                self._fill(root, el)
                continue
            node = self._node_for(eid, nodes, rtype)
            if node is not None:
                self._fill(node, el)
        return CompiledProfile(url=url, type=rtype, root=root, chain=[sd["url"] for sd in chain])

    def _node_for(self, eid: str, nodes: dict[str, Node], rtype: str) -> Node | None:
        if eid in nodes:
            return nodes[eid]
        parent_id, _, last = eid.rpartition(".")
        parent = self._node_for(parent_id, nodes, rtype) if parent_id else None
        if parent is None:
            return None
        name, _, slice_name = last.partition(":")
        base_path = f"{parent.path}.{name}"
        row = self.base_row(base_path)
        if row is None:
            log.warning("profile element %s has no base definition; ignored", eid)
            return None
        if slice_name:
            holder = parent.children.get(name) or self._node_for(f"{parent_id}.{name}", nodes,
                                                                  rtype)
            if holder is None:
                return None
            node = Node(name=name, path=base_path, base_max=_max(row["x"]),
                        base_types=list(row["t"]), slice_name=slice_name,
                        min=0, max=holder.max)
            if holder.is_choice:
                holder.type_slices[slice_name[len(holder.stem):]] = node
                node.min = 0
            else:
                holder.slices.append(node)
        else:
            node = Node(name=name, path=base_path, min=row["n"], max=_max(row["x"]),
                        base_max=_max(row["x"]), base_types=list(row["t"]))
            if row.get("p") and "Resource" not in row["p"]:
                node.targets = list(row["p"])  # base R4 target types, unless profiled
            parent.children[name] = node
        nodes[eid] = node
        return node

    def _fill(self, node: Node, el: dict[str, Any]) -> None:
        if "min" in el:
            node.min = el["min"]
        if "max" in el:
            node.max = _max(el["max"])
        if el.get("mustSupport") is not None:
            node.must_support = bool(el["mustSupport"])
        if "type" in el:
            node.types = [t["code"] for t in el["type"]]
            targets: list[str] = []
            for t in el["type"]:
                for tp in t.get("targetProfile", []):
                    node.target_profiles.append(tp)
                    ttype = self.reg.profile_type(tp)
                    if ttype:
                        targets.append(ttype)
                if t["code"] == "Extension" and t.get("profile"):
                    node.ext_profile = t["profile"][0]
            node.targets = targets or None
        for key, value in el.items():
            if key.startswith("fixed"):
                node.fixed, node.has_fixed = value, True
            elif key.startswith("pattern"):
                node.pattern, node.has_pattern = value, True
        if "binding" in el:
            node.binding = (el["binding"]["strength"], el["binding"]["valueSet"])
        if "slicing" in el:
            sl = el["slicing"]
            node.discriminators = [(d.get("type", "value"), d.get("path", "$this"))
                                   for d in sl.get("discriminator", [])]
            node.slicing_rules = sl.get("rules", "open")
        for c in el.get("_constraints", []):
            node.constraints = [x for x in node.constraints if x.key != c["key"]]
            node.constraints.append(Constraint(c["key"], c.get("severity", "error"),
                                               c.get("human", ""), c["expression"],
                                               _compile(c["expression"])))


def _compile(expression: str) -> fhirpath.Expression | None:
    try:
        return fhirpath.compile_expression(expression)
    except ValueError as exc:  # a broken invariant must not break startup
        log.warning("cannot compile FHIRPath %r: %s", expression, exc)
        return None
