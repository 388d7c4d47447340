"""Reference rewriting inside a resource: every `reference` string anywhere in the tree
(nested elements, extensions, contained resources, any datatype), plus narrative-free
`valueUri`-style placeholders are left untouched (only Reference.reference is rewritten)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def rewrite_references(node: Any, resolve: Callable[[str], str | None]) -> None:
    """Replace each `reference` string r with resolve(r) when that returns a value."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                new = resolve(value)
                if new is not None:
                    node[key] = new
            elif isinstance(value, (dict, list)):
                rewrite_references(value, resolve)
    elif isinstance(node, list):
        for value in node:
            if isinstance(value, (dict, list)):
                rewrite_references(value, resolve)


def collect_references(node: Any, out: list[str]) -> list[str]:
    """Every `reference` string in the tree, in document order."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                out.append(value)
            elif isinstance(value, (dict, list)):
                collect_references(value, out)
    elif isinstance(node, list):
        for value in node:
            collect_references(value, out)
    return out


def located_references(node: Any, where: str) -> list[tuple[str, str]]:
    """Every `reference` string in the tree with the FHIRPath of the Reference holding it
    (`where` is the root, e.g. `Task`): [(reference, 'Task.focus'), ...]."""
    out: list[tuple[str, str]] = []
    _locate(node, where, out)
    return out


def _locate(node: Any, where: str, out: list[tuple[str, str]]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                out.append((value, where))
            elif isinstance(value, dict):
                _locate(value, f"{where}.{key}", out)
            elif isinstance(value, list):
                for i, item in enumerate(value):
                    if isinstance(item, (dict, list)):
                        _locate(item, f"{where}.{key}[{i}]", out)
