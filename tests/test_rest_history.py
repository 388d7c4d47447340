"""History at instance, type and system level, with _since, _count and paging links."""

from __future__ import annotations

import pytest

from tests.samples import sample

pytestmark = pytest.mark.usefixtures("sample_world")


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
    older = server.post("Goal", sample("Goal")).json()
    marker = server.post("Goal", sample("Goal")).json()
    rid, since = marker["id"], marker["meta"]["lastUpdated"]
    assert older["meta"]["lastUpdated"] < since
    ids = [server.post("Goal", sample("Goal")).json()["id"] for _ in range(7)]
    first = server.get("Goal/_history", params={"_count": 3}).json()
    assert first["type"] == "history" and len(first["entry"]) == 3
    assert first["total"] == 9
    everything = _follow(server, first)
    seen_ids = [e["resource"]["id"] for e in everything]
    assert seen_ids == [*reversed(ids), rid, older["id"]]  # newest first, each once
    recent = server.get("Goal/_history", params={"_since": since, "_count": 50}).json()
    recent_ids = [e["resource"]["id"] for e in recent["entry"]]
    assert recent_ids == [*reversed(ids), rid]  # at or after _since; the older one is out
    assert recent["total"] == 8
    for entry in recent["entry"]:
        assert entry["response"]["lastModified"] >= since
    later = server.get("Goal/_history", params={"_since": "2999-01-01T00:00:00Z"}).json()
    assert later.get("entry", []) == [] and later["total"] == 0


def test_paging_stays_correct_while_others_write(server):
    created = [server.post("Basic", sample("Basic")).json()["id"] for _ in range(5)]
    first = server.get("Basic/_history", params={"_count": 2}).json()
    assert [e["resource"]["id"] for e in first["entry"]] == created[::-1][:2]
    newer = [server.post("Basic", sample("Basic")).json()["id"] for _ in range(3)]
    ours = set(created) | set(newer)  # the server seeds Basic resources of its own (older)
    rest_ids = [e["resource"]["id"] for e in _follow(server, first)[2:]]
    # The next pages continue where the first stopped: newer versions neither shift them
    # nor appear in them.
    assert [i for i in rest_ids if i in ours] == created[::-1][2:]
    assert len(rest_ids) == len(set(rest_ids)) == first["total"] - 2
    fresh = _follow(server, server.get("Basic/_history", params={"_count": 2}).json())
    assert [e["resource"]["id"] for e in fresh if e["resource"]["id"] in ours] == [
        *reversed(newer), *reversed(created)]


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
