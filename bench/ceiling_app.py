"""The benchmark ceiling: the same HTTP stack (Flask under gunicorn) doing one bare SQL
statement per request on the same JSON, with no FHIR logic at all."""

from __future__ import annotations

import os
import uuid

from flask import Flask, Response, request
from sqlalchemy import Column, MetaData, String, Table, Text, delete, insert, select, update

from fhir_server.storage.db import Database

db = Database(os.environ["DATABASE_URL"])
meta = MetaData()
bare = Table("bare", meta, Column("id", String(64), primary_key=True), Column("body", Text))
meta.create_all(db.engine)
app = Flask(__name__)


@app.get("/ping")
def ping() -> str:
    return "ok"


@app.post("/bare")
def create() -> Response:
    rid = str(uuid.uuid4())
    with db.write() as conn:
        conn.execute(insert(bare).values(id=rid, body=request.get_data(as_text=True)))
    return Response(request.get_data(), status=201, content_type="application/json",
                    headers={"Location": f"/bare/{rid}"})


@app.get("/bare/<rid>")
def read(rid: str) -> Response:
    with db.read() as conn:
        body = conn.execute(select(bare.c.body).where(bare.c.id == rid)).scalar()
    return Response(body or "", status=200 if body else 404, content_type="application/json")


@app.put("/bare/<rid>")
def put(rid: str) -> Response:
    with db.write() as conn:
        body = request.get_data(as_text=True)
        conn.execute(update(bare).where(bare.c.id == rid).values(body=body))
    return Response(request.get_data(), status=200, content_type="application/json")


@app.delete("/bare/<rid>")
def remove(rid: str) -> Response:
    with db.write() as conn:
        conn.execute(delete(bare).where(bare.c.id == rid))
    return Response(b"", status=204)
