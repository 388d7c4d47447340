"""WSGI app for the token-endpoint benchmark: the auth blueprint alone, under gunicorn.

`gunicorn bench.auth_bench_app:app` with DATABASE_URL set (the benchmark registers the
client in that database before starting the server).
"""

from __future__ import annotations

import os

from flask import Flask

import fhir_server.auth.auth_schema  # noqa: F401
from fhir_server.auth.server import create_auth_blueprint
from fhir_server.config import Settings
from fhir_server.storage.db import Database

db = Database(os.environ["DATABASE_URL"])
app = Flask("auth-bench")
app.register_blueprint(create_auth_blueprint(db, Settings(base_url="", auth_mode="on")))
app.add_url_rule("/ping", "ping", lambda: "ok")
