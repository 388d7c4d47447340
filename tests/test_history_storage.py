"""History bodies stored compressed, the current version's kept once (storage/history_bodies.py),
on SQLite and PostgreSQL: every version reads back exactly as written (vread, `_history`, the
repository's version lists, the outcomes rebuild), current reads are the plain resource row,
and migration 0013 converts a database with data both ways."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import select, text

from fhir_server.storage import history_bodies, outcomes_store
from fhir_server.storage.db import Database
from fhir_server.storage.migrate import alembic_config, upgrade
from fhir_server.storage.repository import Repository
from fhir_server.storage.schema import history, resources
from tests.dbs import backends, fresh_database_url

BEFORE = "0012_patient_invitations"
UNICODE = "Zoë Ørsted-Ñúñez 患者 🧠 «être» Ελληνικά \"quoted\" back\\slash"


def _basic(text: str, **more: object) -> dict:
    return {"resourceType": "Basic", "code": {"text": text}, **more}


def _stored_rows(conn, res_id: str) -> list[tuple[int, bool, bytes | None]]:
    """(version, deleted, zbody) of each history row of Basic/res_id, oldest first."""
    rows = conn.execute(select(history.c.version, history.c.deleted, history.c.zbody)
                        .where(history.c.res_type == "Basic", history.c.res_id == res_id)
                        .order_by(history.c.version)).all()
    return [(v, bool(d), None if z is None else bytes(z)) for v, d, z in rows]


def test_codec_round_trip_and_unknown_format():
    for body in ["{}", UNICODE, "x" * 300_000, '{"a":"' + "é" * 5000 + '"}']:
        stored = history_bodies.encode(body)
        assert stored[0] == history_bodies.DEFLATE_DICT_1
        assert history_bodies.decode(stored) == body
        assert history_bodies.decode(memoryview(stored)) == body
    typical = ('{"resourceType":"Task","status":"accepted","intent":"order","meta":{"profile":'
               '["http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/'
               'SDOHCC-TaskForReferralManagement"]},"for":{"reference":"Patient/p1"}}')
    assert len(history_bodies.encode(typical)) < len(typical) / 2  # the dictionary helps
    with pytest.raises(ValueError, match="format"):
        history_bodies.decode(b"\x07abc")
    with pytest.raises(ValueError, match="format"):
        history_bodies.decode(b"")


def test_every_version_reads_back_as_written(server):
    big = UNICODE + " " + "ünïcödé " * 40_000  # about 400 kB of JSON
    written = [server.post("Basic", _basic(UNICODE)).json()]
    rid = written[0]["id"]
    written.append(server.put(f"Basic/{rid}", _basic(big, id=rid)).json())
    written.append(server.put(f"Basic/{rid}", _basic("third", id=rid)).json())
    assert server.delete(f"Basic/{rid}").status_code in (200, 204)
    written.append(None)  # version 4: the deletion
    written.append(server.put(f"Basic/{rid}", _basic(UNICODE + " revived", id=rid)).json())

    for version, body in enumerate(written, start=1):
        response = server.get(f"Basic/{rid}/_history/{version}")
        if body is None:
            assert response.status_code == 410
        else:
            assert response.status_code == 200, response.text
            assert response.json() == body
    entries = server.get(f"Basic/{rid}/_history", params={"_count": 50}).json()["entry"]
    assert [e.get("resource") for e in reversed(entries)] == written
    assert server.get(f"Basic/{rid}").json() == written[-1]

    with server.database.read() as conn:
        rows = _stored_rows(conn, rid)
        current_text = conn.execute(select(resources.c.body).where(
            resources.c.res_type == "Basic", resources.c.res_id == rid)).scalar_one()
        versions = Repository(conn).versions("Basic", [rid])[rid]
        pid = versions[0].pid
        (_, _, rebuilt), = outcomes_store.histories(conn, [pid])
    # Superseded versions compressed, the deletion and the current version without a copy.
    assert [(v, d, z is not None) for v, d, z in rows] == [
        (1, False, True), (2, False, True), (3, False, True), (4, True, False), (5, False, False)]
    assert len(rows[1][2]) < len(big.encode()) / 10  # the repetitive large body compresses
    assert history_bodies.decode(rows[0][2]) == versions[0].body
    # The current version is the plain JSON text of the resource row, read as it is.
    assert current_text == versions[-1].body and current_text.startswith('{"resourceType"')
    assert [s.resource() if s.body else None for s in versions] == written
    assert [body for _updated, body in rebuilt] == written


def test_versions_written_and_superseded_in_one_transaction(database):
    with database.write() as conn:
        repo = Repository(conn)
        first = repo.create(_basic("one"), res_id="hs-tx-1")
        second, _ = repo.update(_basic("two", id="hs-tx-1"), "hs-tx-1")
        deletion, _ = repo.delete("Basic", "hs-tx-1")
        third, _ = repo.update(_basic("three", id="hs-tx-1"), "hs-tx-1")
    with database.read() as conn:
        repo = Repository(conn)
        assert [repo.vread("Basic", "hs-tx-1", v).body for v in (1, 2, 3, 4)] == [
            first.body, second.body, None, third.body]
        assert [z is not None for _v, _d, z in _stored_rows(conn, "hs-tx-1")] == [
            True, True, False, False]
    assert deletion is not None and deletion.deleted


def test_a_rolled_back_update_leaves_the_current_version_uncopied(database):
    with database.write() as conn:
        created = Repository(conn).create(_basic("kept"), res_id="hs-rb-1")
    with pytest.raises(RuntimeError), database.write() as conn:
        Repository(conn).update(_basic("dropped", id="hs-rb-1"), "hs-rb-1")
        Repository(conn).vread("Basic", "hs-rb-1", 1)  # flushes the pending UPDATE
        raise RuntimeError("roll back")
    with database.read() as conn:
        assert _stored_rows(conn, "hs-rb-1") == [(1, False, None)]
        assert Repository(conn).vread("Basic", "hs-rb-1", 1).body == created.body
        assert Repository(conn).read("Basic", "hs-rb-1").body == created.body


def _downgrade(db: Database, revision: str) -> None:
    with db.engine.begin() as conn:
        cfg = alembic_config(db.url.render_as_string(hide_password=False))
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


@pytest.mark.parametrize("backend", backends())
def test_migration_converts_a_database_with_data_both_ways(backend, tmp_path):
    db = Database(fresh_database_url(backend, tmp_path))
    try:
        upgrade(db)
        expected: dict[tuple[str, int], str | None] = {}
        with db.write() as conn:  # more rows than one conversion batch holds
            repo = Repository(conn)
            for i in range(1100):
                rid = f"mig-{i}"
                created = repo.create(_basic(f"{UNICODE} {i}"), res_id=rid)
                expected[(rid, 1)] = created.body
                if i % 2:
                    updated, _ = repo.update(_basic(f"v2 {i} " + "ß" * i, id=rid), rid)
                    expected[(rid, 2)] = updated.body
                if i % 7 == 0:
                    repo.delete("Basic", rid)
                    expected[(rid, 1 + (i % 2) + 1)] = None

        _downgrade(db, BEFORE)  # the layout before 0013: every version's full text
        with db.read() as conn:
            old = {(rid, v): body for rid, v, body in conn.execute(text(
                "SELECT res_id, version, body FROM resource_history WHERE res_type = 'Basic' "
                "AND res_id LIKE 'mig-%'"))}
            columns = set(conn.execute(text("SELECT * FROM resource_history LIMIT 1")).keys())
        assert old == expected
        assert "zbody" not in columns and "body" in columns

        upgrade(db)
        with db.read() as conn:
            repo = Repository(conn)
            ids = sorted({rid for rid, _v in expected})
            versions = repo.versions("Basic", ids)
            got = {(rid, s.version): s.body for rid, lst in versions.items() for s in lst}
            stored = {(rid, v): z for rid, v, z in conn.execute(select(
                history.c.res_id, history.c.version, history.c.zbody).where(
                history.c.res_type == "Basic", history.c.res_id.like("mig-%")))}
            current = {rid: s for rid, s in repo.read_many(
                [("Basic", rid) for rid in ids]).items()}
        assert got == expected
        for (rid, version), body in expected.items():
            is_current = current[("Basic", rid)].version == version
            assert (stored[(rid, version)] is None) == (body is None or is_current), (rid, version)
        for (_t, rid), now in current.items():
            assert now.body == (None if now.deleted else expected[(rid, now.version)])
    finally:
        db.dispose()
