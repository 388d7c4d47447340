"""Concurrent writers never lose an update: If-Match races have exactly one winner and
unconditional updates produce gap-free versions."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.live import FhirHttp
from tests.samples import sample

pytestmark = pytest.mark.usefixtures("sample_world")


def test_parallel_if_match_exactly_one_wins(server):
    rid = server.post("Task", sample("Task")).json()["id"]
    body = server.get(f"Task/{rid}").json()

    def attempt(i: int) -> int:
        client = FhirHttp(server.base)
        mine = dict(body, description=f"writer {i}")
        return client.put(f"Task/{rid}", mine, headers={"If-Match": 'W/"1"'}).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(attempt, range(8)))
    assert sorted(statuses) == [200] + [412] * 7
    final = server.get(f"Task/{rid}").json()
    assert final["meta"]["versionId"] == "2"


def test_parallel_updates_without_if_match_are_gap_free(server):
    rid = server.post("Patient", sample("Patient")).json()["id"]
    writers, per_writer = 6, 5

    def work(i: int) -> list[str]:
        client = FhirHttp(server.base)
        versions = []
        for j in range(per_writer):
            resp = client.put(f"Patient/{rid}", sample("Patient", id=rid,
                                                        gender=["male", "female"][j % 2]))
            assert resp.status_code == 200, resp.text
            versions.append(resp.json()["meta"]["versionId"])
        return versions

    with ThreadPoolExecutor(max_workers=writers) as pool:
        results = [v for vs in pool.map(work, range(writers)) for v in vs]
    expected = [str(v) for v in range(2, 2 + writers * per_writer)]
    assert sorted(results, key=int) == expected
    history = server.get(f"Patient/{rid}/_history", params={"_count": 100}).json()
    assert [int(e["response"]["etag"][3:-1]) for e in history["entry"]] == list(
        range(1 + writers * per_writer, 0, -1))


def test_parallel_update_as_create_of_one_new_id(server):
    """Several PUTs race to create the same new id: one creates it (201), the others become
    updates of it (200), versions stay gap-free and every version is in the history."""
    rid = "race-" + FhirHttp.__name__.lower()
    writers = 6

    def attempt(i: int) -> tuple[int, str]:
        client = FhirHttp(server.base)
        resp = client.put(f"Patient/{rid}", sample("Patient", id=rid,
                                                    gender=["male", "female"][i % 2]))
        return resp.status_code, resp.json()["meta"]["versionId"]

    with ThreadPoolExecutor(max_workers=writers) as pool:
        results = list(pool.map(attempt, range(writers)))
    assert sorted(s for s, _v in results) == [200] * (writers - 1) + [201]
    assert sorted(int(v) for _s, v in results) == list(range(1, writers + 1))
    history = server.get(f"Patient/{rid}/_history", params={"_count": 100}).json()
    assert len(history["entry"]) == writers
