"""The layering of docs/ARCHITECTURE.md, checked on the import graph (tests/import_graph.py):
no module imports in a cycle, and no arrow points up the layers.

`.venv/bin/python -m tests.import_graph` prints the graph's cycles and upward arrows.
"""

from __future__ import annotations

from tests import import_graph as ig


def test_no_import_cycles():
    assert ig.cycles(ig.graph()) == []


def test_no_arrow_points_up_the_layers():
    assert ig.upward(ig.graph()) == []


def test_the_checker_sees_cycles_and_upward_arrows():
    """The checks would fail on a graph with a cycle or an upward arrow."""
    g = {"fhir_server.storage.a": {"fhir_server.interactions.b"},
         "fhir_server.interactions.b": {"fhir_server.storage.a"},
         "fhir_server.search.c": set()}
    assert ig.cycles(g) == [["fhir_server.interactions.b", "fhir_server.storage.a"]]
    assert ig.upward(g) == [("fhir_server.storage.a", "fhir_server.interactions.b")]


def test_the_graph_covers_the_product():
    g = ig.graph()
    assert len(g) > 120
    assert "fhir_server.interactions.operations" in g["fhir_server.rest.routes"]
    assert not any(name.startswith("profiles.devtools") for name in g)


def test_http_layer_opens_no_transaction_and_has_no_second_dispatcher():
    """rest/ adapts HTTP to the one route table (interactions/route_table.py): no SQL and no
    transaction of its own, no Repository; Bundle entries dispatch through the same table.
    (Remembered responses of idempotent retries are stored through storage.request_keys.)"""
    rest = sorted((ig.REPO / "fhir_server" / "rest").glob("*.py"))
    assert rest
    for path in rest:
        text = path.read_text("utf-8")
        assert ".db.read(" not in text and ".db.write(" not in text, path
        assert "Repository(" not in text and "sqlalchemy" not in text, path
    g = ig.graph()
    for name in ig.product_modules():
        if name.startswith("fhir_server.rest"):
            storage = {t for t in g[name] if t.startswith("fhir_server.storage")}
            assert storage <= {"fhir_server.storage.request_keys", "fhir_server.storage.db"}
    bundles = (ig.REPO / "fhir_server" / "interactions" / "bundles.py").read_text("utf-8")
    assert "route_table.dispatch(" in bundles and "_read_entry" not in bundles


# Modules that still write SQL outside storage, each with why it is not moved yet. The list
# may only shrink: a module that no longer imports SQLAlchemy must leave it.
SQL_PENDING = {
    "fhir_server.auth.authorize": "authorization-server tables: to move into auth/*_store",
    "fhir_server.auth.client_auth": "authorization-server tables: to move into auth/*_store",
    "fhir_server.auth.grants": "authorization-server tables: to move into auth/*_store",
    "fhir_server.auth.keys": "authorization-server tables: to move into auth/*_store",
    "fhir_server.auth.registry": "authorization-server tables: to move into auth/*_store",
    "fhir_server.auth.tokens": "authorization-server tables: to move into auth/*_store",
}


def _imports_sqlalchemy(path) -> bool:  # type: ignore[no-untyped-def]
    import ast

    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        if any(n == "sqlalchemy" or n.startswith("sqlalchemy.") for n in names):
            return True
    return False


def _may_use_sql(name: str) -> bool:
    leaf = name.rsplit(".", 1)[-1]
    return (name.startswith(("fhir_server.storage", "fhir_server.migrations"))
            or (name.startswith(("fhir_server.auth.", "subscriptions."))
                and leaf.endswith(("_schema", "_store"))))


def test_only_storage_and_the_stores_import_sqlalchemy():
    """SQL lives in storage/, the migrations and the *_schema / *_store modules of auth and
    subscriptions; everyone else uses the Repository (and `storage.db.Connection` as the
    type of a transaction)."""
    users = {name for name, path in ig.product_modules().items() if _imports_sqlalchemy(path)}
    assert sorted(n for n in users if not _may_use_sql(n) and n not in SQL_PENDING) == []
    assert sorted(n for n in SQL_PENDING if n not in users) == []  # fixed: drop it above


def test_no_read_per_search_hit():
    """No `for id in find_ids(...): repo.read(...)` loop (a statement per hit): callers
    ask the Repository for the bodies in one statement (`search_resources`)."""
    import ast

    offenders = []
    for name, path in ig.product_modules().items():
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if not (isinstance(node, ast.For) and isinstance(node.iter, ast.Call)
                    and getattr(node.iter.func, "id", getattr(node.iter.func, "attr", ""))
                    == "find_ids"):
                continue
            reads = [c for stmt in node.body for c in ast.walk(stmt)
                     if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute)
                     and c.func.attr in ("read", "vread", "history", "current")]
            if reads:
                offenders.append(f"{name}:{node.lineno}")
    assert offenders == []
