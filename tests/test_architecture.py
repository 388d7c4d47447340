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
