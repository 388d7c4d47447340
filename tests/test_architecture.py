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
