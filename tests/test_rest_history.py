"""History at instance, type and system level, with _since, _count and paging links."""

from __future__ import annotations

import time

from tests.samples import sample


def _follow(server, bundle):
    """All entries reachable from a history Bundle by following `next` links."""
    entries = list(bundle["entry"])
    while True:
        nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if not nxt:
            return entries
        bundle = server.get(nxt[0]).json()
        entries.extend(bundle["entry"])


def test_type_history_paging_and_since(server):
    marker = sample("Goal")
    rid = server.post("Goal", marker).json()["id"]
    time.sleep(0.01)
    since = server.get(f"Goal/{rid}").json()["meta"]["lastUpdated"]
    ids = [server.post("Goal", sample("Goal")).json()["id"] for _ in range(7)]
    first = server.get("Goal/_history", params={"_count": 3}).json()
    assert first["type"] == "history" and len(first["entry"]) == 3
    assert first["total"] >= 8
    everything = _follow(server, first)
    seen_ids = [e["resource"]["id"] for e in everything]
    assert len(seen_ids) == len(set(seen_ids)) == first["total"]
    assert set(ids) <= set(seen_ids)
    recent = server.get("Goal/_history", params={"_since": since, "_count": 50}).json()
    recent_ids = {e["resource"]["id"] for e in recent["entry"]}
    assert set(ids) <= recent_ids
    for entry in recent["entry"]:
        assert entry["response"]["lastModified"] >= since


def test_paging_stays_correct_while_others_write(server):
    for _ in range(5):
        server.post("Basic", sample("Basic"))
    first = server.get("Basic/_history", params={"_count": 2}).json()
    before = {e["resource"]["id"] for e in first["entry"]}
    for _ in range(3):  # newer versions must not shift the next pages
        server.post("Basic", sample("Basic"))
    rest = _follow(server, first)[2:]
    rest_ids = [e["resource"]["id"] for e in rest]
    assert not before & set(rest_ids)
    assert len(rest_ids) == len(set(rest_ids))


def test_system_history_and_instance_history(server):
    rid = server.post("Device", sample("Device")).json()["id"]
    body = server.get(f"Device/{rid}").json()
    server.put(f"Device/{rid}", body)
    inst = server.get(f"Device/{rid}/_history").json()
    assert [e["request"]["method"] for e in inst["entry"]] == ["PUT", "POST"]
    assert inst["total"] == 2
    system = server.get("_history", params={"_count": 5}).json()
    assert system["type"] == "history" and len(system["entry"]) == 5
    assert system["entry"][0]["resource"]["id"] == rid
    assert server.get("Device/unknown/_history").status_code == 404


def test_history_bad_parameters(server):
    assert server.get("_history", params={"_since": "yesterday"}).status_code == 400
    assert server.get("_history", params={"_count": "many"}).status_code == 400
    assert server.get("_history", params={"_cursor": "x"}).status_code == 400
    strict = server.get("_history", params={"_foo": "1"}, headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400
    assert server.get("_history", params={"_foo": "1"}).status_code == 200
