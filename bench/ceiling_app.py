"""The benchmark ceiling: the same HTTP stack (Flask under gunicorn, the same `Database`
transactions) serving the CRUD mix of `bench/crud_mix.lua` with no FHIR logic at all.

Each request is one short transaction: a create inserts the body and one index row (the
identifier value, parsed from the JSON), a read selects the body by id, an update replaces
the body and its index row, a search selects bodies through the index, a delete removes
both rows. Run it as `gunicorn bench.ceiling_app:app` with DATABASE_URL set.
"""

from __future__ import annotations

import json
import os
import uuid

from flask import Flask, Response, request

from fhir_server.storage.db import Database

db = Database(os.environ["DATABASE_URL"])
with db.write() as setup:
    setup.exec_driver_sql("CREATE TABLE IF NOT EXISTS bare "
                          "(id VARCHAR(64) PRIMARY KEY, body TEXT NOT NULL)")
    setup.exec_driver_sql("CREATE TABLE IF NOT EXISTS bare_identifier "
                          "(id VARCHAR(64) NOT NULL, value VARCHAR(200) NOT NULL)")
    setup.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_bare_identifier_value "
                          "ON bare_identifier (value)")
    setup.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_bare_identifier_id "
                          "ON bare_identifier (id)")
app = Flask(__name__)
JSON = "application/fhir+json"


def _identifier(body: bytes) -> str:
    return json.loads(body)["identifier"][0]["value"]


@app.get("/ping")
def ping() -> str:
    return "ok"


@app.post("/bare")
def create() -> Response:
    rid = str(uuid.uuid4())
    body = request.get_data()
    with db.write() as conn:
        conn.exec_driver_sql(_sql("INSERT INTO bare (id, body) VALUES (?, ?)"),
                             (rid, body.decode()))
        conn.exec_driver_sql(_sql("INSERT INTO bare_identifier (id, value) VALUES (?, ?)"),
                             (rid, _identifier(body)))
    return Response(body, status=201, content_type=JSON,
                    headers={"Location": f"/bare/{rid}/_history/1"})


@app.get("/bare/<rid>")
def read(rid: str) -> Response:
    with db.read() as conn:
        body = conn.exec_driver_sql(_sql("SELECT body FROM bare WHERE id = ?"), (rid,)).scalar()
    return Response(body or "", status=200 if body else 404, content_type=JSON)


@app.get("/bare")
def search() -> Response:
    value = request.args.get("identifier", "").split("|")[-1]
    with db.read() as conn:
        bodies = conn.exec_driver_sql(
            _sql("SELECT b.body FROM bare_identifier i JOIN bare b ON b.id = i.id "
                 "WHERE i.value = ?"), (value,)).scalars().all()
    return Response('{"resourceType":"Bundle","type":"searchset","entry":['
                    + ",".join('{"resource":' + b + "}" for b in bodies) + "]}",
                    status=200, content_type=JSON)


@app.put("/bare/<rid>")
def put(rid: str) -> Response:
    body = request.get_data()
    with db.write() as conn:
        conn.exec_driver_sql(_sql("UPDATE bare SET body = ? WHERE id = ?"), (body.decode(), rid))
        conn.exec_driver_sql(_sql("UPDATE bare_identifier SET value = ? WHERE id = ?"),
                             (_identifier(body), rid))
    return Response(body, status=200, content_type=JSON)


@app.delete("/bare/<rid>")
def remove(rid: str) -> Response:
    with db.write() as conn:
        conn.exec_driver_sql(_sql("DELETE FROM bare_identifier WHERE id = ?"), (rid,))
        conn.exec_driver_sql(_sql("DELETE FROM bare WHERE id = ?"), (rid,))
    return Response(b"", status=204)


def _sql(statement: str) -> str:
    """`statement` in the driver's parameter style (SQLite `?`, psycopg `%s`)."""
    return statement if db.is_sqlite else statement.replace("?", "%s")
