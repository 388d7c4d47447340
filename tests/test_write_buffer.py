"""Deferred history and index rows (storage/write_buffer.py), on SQLite and PostgreSQL:
reads inside the writing transaction see every earlier write, commits keep everything,
rollbacks (whole transaction or savepoint) keep nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import Connection, func, select

from fhir_server.search.extract import extract_index
from fhir_server.storage import write_buffer
from fhir_server.storage.index_schema import idx_string, idx_token
from fhir_server.storage.repository import Repository
from fhir_server.storage.schema import history
from fhir_server.storage.search_sql import find_ids


def _patient(res_id: str, family: str, gender: str = "female") -> dict:
    return {"resourceType": "Patient", "id": res_id, "gender": gender,
            "name": [{"family": family}]}


def _rows(conn: Connection, table, pid: int) -> int:  # type: ignore[no-untyped-def]
    return conn.execute(select(func.count()).select_from(table)
                        .where(table.c.pid == pid)).scalar_one()


def _versions(conn: Connection, res_id: str) -> list[int]:
    return list(conn.execute(select(history.c.version).where(
        history.c.res_type == "Patient", history.c.res_id == res_id)
        .order_by(history.c.version)).scalars())


def test_search_inside_the_transaction_sees_earlier_writes(database):
    with database.write() as conn:
        Repository(conn).create(_patient("wb-1", "Quillfeather"), res_id="wb-1")
        assert find_ids(conn, "Patient", [("family", "quillfeather")]) == ["wb-1"]
        assert _versions(conn, "wb-1") == [1]  # a history read flushes too
    with database.read() as conn:
        assert find_ids(conn, "Patient", [("family", "quillfeather")]) == ["wb-1"]


def test_updates_in_one_transaction_leave_only_the_last_index_rows(database):
    with database.write() as conn:
        repo = Repository(conn)
        created = repo.create(_patient("wb-2", "Ashdown"), res_id="wb-2")
        repo.update(_patient("wb-2", "Birchwood", "male"), "wb-2")
        repo.update(_patient("wb-2", "Cobble", "other"), "wb-2")
    with database.read() as conn:
        assert find_ids(conn, "Patient", [("family", "ashdown")]) == []
        assert find_ids(conn, "Patient", [("family", "birchwood")]) == []
        assert find_ids(conn, "Patient", [("family", "cobble"), ("gender", "other")]) == ["wb-2"]
        expected = extract_index(_patient("wb-2", "Cobble", "other"))
        assert _rows(conn, idx_token, created.pid) == len(expected.tokens)  # no leftovers
        assert _rows(conn, idx_string, created.pid) == len(expected.strings)
        assert _versions(conn, "wb-2") == [1, 2, 3]


def test_update_after_a_flush_replaces_the_flushed_rows(database):
    with database.write() as conn:
        repo = Repository(conn)
        repo.create(_patient("wb-3", "Dunmore"), res_id="wb-3")
        assert find_ids(conn, "Patient", [("family", "dunmore")]) == ["wb-3"]  # flushed
        repo.update(_patient("wb-3", "Elsworth"), "wb-3")
    with database.read() as conn:
        assert find_ids(conn, "Patient", [("family", "dunmore")]) == []
        assert find_ids(conn, "Patient", [("family", "elsworth")]) == ["wb-3"]


def test_rolled_back_transaction_writes_no_rows(database):
    pids = []
    with pytest.raises(RuntimeError), database.write() as conn:
        pids.append(Repository(conn).create(_patient("wb-4", "Fenwick"), res_id="wb-4").pid)
        raise RuntimeError("abort")
    with database.read() as conn:
        assert _rows(conn, idx_string, pids[0]) == 0
        assert _versions(conn, "wb-4") == []
    with database.write() as conn:  # the next transaction on a pooled connection is clean
        Repository(conn).create(_patient("wb-5", "Garrow"), res_id="wb-5")
    with database.read() as conn:
        assert find_ids(conn, "Patient", [("family", "fenwick")]) == []
        assert find_ids(conn, "Patient", [("family", "garrow")]) == ["wb-5"]


def test_savepoint_rollback_discards_only_its_own_rows(database):
    with database.write() as conn:
        repo = Repository(conn)
        repo.create(_patient("wb-6", "Hollin"), res_id="wb-6")
        with pytest.raises(RuntimeError), conn.begin_nested():
            repo.create(_patient("wb-7", "Ibbotson"), res_id="wb-7")
            raise RuntimeError("undo the savepoint")
        with conn.begin_nested():
            repo.create(_patient("wb-8", "Jessop"), res_id="wb-8")
    with database.read() as conn:
        assert find_ids(conn, "Patient", [("family", "hollin")]) == ["wb-6"]
        assert find_ids(conn, "Patient", [("family", "ibbotson")]) == []
        assert find_ids(conn, "Patient", [("family", "jessop")]) == ["wb-8"]
        assert _versions(conn, "wb-7") == []
        assert _versions(conn, "wb-8") == [1]


def test_delete_removes_rows_queued_in_the_same_transaction(database):
    with database.write() as conn:
        repo = Repository(conn)
        created = repo.create(_patient("wb-9", "Kettering"), res_id="wb-9")
        repo.delete("Patient", "wb-9")
    with database.read() as conn:
        assert _rows(conn, idx_string, created.pid) == 0
        assert find_ids(conn, "Patient", [("family", "kettering")]) == []
        assert _versions(conn, "wb-9") == [1, 2]


def test_nothing_is_left_pending_after_commit(database):
    with database.write() as conn:
        Repository(conn).create(_patient("wb-10", "Lowther"), res_id="wb-10")
        assert conn.info.get("fhir_write_buffer")  # queued, not yet sent
    with database.write() as conn:
        assert not conn.info.get("fhir_write_buffer")
        write_buffer.flush(conn)  # a no-op


def test_the_index_values_of_each_written_version_are_kept_for_the_write_phases(database):
    """Subscription matching on the write path reuses what the write extracted, per
    (pid, version): a later version of the same resource never answers for an earlier."""
    from fhir_server.storage.index_store import recent_values

    with database.write() as conn:
        repo = Repository(conn)
        first = repo.create(_patient("wb-rv", "Hartwell"), res_id="wb-rv")
        second, _previous = repo.update(_patient("wb-rv", "Kestrel", "male"), "wb-rv")
        v1, v2 = recent_values(conn, first.pid, 1), recent_values(conn, first.pid, 2)
        assert v1 is not None and v2 is not None
        assert [row[2] for row in v1.strings if row[0] == "family"] == ["hartwell"]
        assert [row[2] for row in v2.strings if row[0] == "family"] == ["kestrel"]
        assert v2.tokens == extract_index(second.resource()).tokens
        assert recent_values(conn, first.pid, 3) is None
