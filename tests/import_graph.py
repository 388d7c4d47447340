"""The import graph of the product's modules: cycles and arrows that point up the layers.

`.venv/bin/python -m tests.import_graph` prints both; `tests/test_architecture.py` asserts
that there are none. Every import counts, at module level or inside a function (a
function-level import still makes the module depend on the other one).

Layers, top to bottom (docs/ARCHITECTURE.md); a module may import its own layer's modules
and anything below, never above:

0. composition: the app factory, `wiring`, the command line and the commands, the worker,
   `tables` (every table, for migrations)
1. HTTP, apps and features: `rest`, `app_launch`, `web`, `conformance` (the test kit, a
   client of any server), `features` (their installers, write phases and operations)
2. what features share: `features.common`, `matching` (the directory ranking)
3. interactions
4. access policy and domain rules: `auth`, `workflow`, `profiles`, `mappers`,
   `subscriptions`, `formats`
5. storage
6. search (pure)
7. leaves: errors, configuration, JSON and decimal helpers

Imports under `if TYPE_CHECKING:` are left out (they are not executed), and `from pkg
import submodule` is an arrow to the submodule only (every import of a submodule runs its
package's `__init__`, which is not a dependency on what that `__init__` re-exports).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("fhir_server", "subscriptions", "profiles", "mappers")
# Development tools: run by hand to rebuild data, never imported by the product.
DEV_TOOLS = ("profiles.devtools", "fhir_server.conformance.devtools",
             "fhir_server.search.data.build",
             "fhir_server.formats.build_xml_data", "fhir_server.migrations")

# (module prefix, layer): the longest matching prefix wins.
LAYERS: tuple[tuple[str, int], ...] = (
    ("fhir_server.__main__", 0), ("fhir_server.app", 0), ("fhir_server.wiring", 0),
    ("fhir_server.cli", 0), ("fhir_server.loader", 0), ("fhir_server.worker", 0),
    ("fhir_server.demo", 0), ("fhir_server.directory_cli", 0), ("fhir_server.seed", 0),
    ("fhir_server.jobs", 0), ("fhir_server.tables", 0),
    ("fhir_server.rest", 1), ("fhir_server.app_launch", 1), ("fhir_server.web", 1),
    ("fhir_server.conformance", 1),
    ("fhir_server.features", 1),
    ("fhir_server.features.common", 2), ("fhir_server.matching", 2),
    ("fhir_server.interactions", 3),
    ("fhir_server.auth", 4), ("fhir_server.workflow", 4), ("profiles", 4), ("mappers", 4),
    ("subscriptions", 4), ("fhir_server.formats", 4), ("fhir_server.reminders", 4),
    ("fhir_server.i18n", 4), ("fhir_server.catalogues", 4),
    ("fhir_server.storage", 5),
    ("fhir_server.search", 6),
    ("fhir_server.errors", 7), ("fhir_server.config", 7), ("fhir_server.json_tree", 7),
    ("fhir_server.paths", 7), ("fhir_server.resource_types", 7),
    ("fhir_server.formats.decimals", 7), ("fhir_server", 7),
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def product_modules() -> dict[str, Path]:
    """Every product module (dev tools left out), by dotted name."""
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            name = module_name(path)
            if not any(name == t or name.startswith(t + ".") for t in DEV_TOOLS):
                out[name] = path
    return out


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The product module an import names (a package's `__init__`, or None if external)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside `if TYPE_CHECKING:` blocks."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return out


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The product modules `name` imports (module level or inside functions)."""
    tree = ast.parse(path.read_text("utf-8"))
    skip = _type_checking_only(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import mod` names the module; `from mod import name` the module
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        else:
            continue
        for target in targets:
            found = _resolve(target, known)
            if found is not None and found != name:
                out.add(found)
    return out


def graph() -> dict[str, set[str]]:
    known = product_modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def layer(name: str) -> int:
    best = max((p for p, _ in LAYERS if name == p or name.startswith(p + ".")), key=len)
    return dict(LAYERS)[best]


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return sorted(out)


def upward(g: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Imports from a lower layer into a higher one."""
    return sorted((a, b) for a, targets in g.items() for b in targets if layer(b) < layer(a))


def report(g: dict[str, set[str]]) -> Iterable[str]:
    found = cycles(g)
    yield f"{len(g)} modules, {sum(len(t) for t in g.values())} imports"
    yield f"import cycles: {len(found)}"
    for component in found:
        yield "  " + " <-> ".join(component)
    arrows = upward(g)
    yield f"upward arrows: {len(arrows)}"
    for a, b in arrows:
        yield f"  {a} (layer {layer(a)}) -> {b} (layer {layer(b)})"


if __name__ == "__main__":
    print("\n".join(report(graph())))
