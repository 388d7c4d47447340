"""Plain dotted-path navigation over FHIR JSON (the one helper for `a.b.c` lookups)."""

from __future__ import annotations

from typing import Any


def values_at(node: Any, path: str) -> list[Any]:
    """Every value at dotted `path` below `node`, arrays flattened (`$this`: the node)."""
    if path == "$this":
        return [node]
    current = [node]
    for step in path.split("."):
        found: list[Any] = []
        for item in current:
            if isinstance(item, dict) and step in item:
                value = item[step]
                found.extend(value if isinstance(value, list) else [value])
        current = found
    return current
