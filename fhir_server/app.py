"""Flask application factory."""

from __future__ import annotations

import logging

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from fhir_server.config import Settings
from fhir_server.errors import FhirError
from fhir_server.rest import io
from fhir_server.rest.routes import bp as fhir_blueprint
from fhir_server.storage.db import Database
from fhir_server.wiring import build_services, init_app

log = logging.getLogger("fhir_server")

_HTTP_CODES = {400: "invalid", 404: "not-found", 405: "not-supported", 406: "not-supported",
               409: "conflict", 413: "too-costly", 415: "not-supported"}


def create_app(settings: Settings | None = None, *, db: Database | None = None) -> Flask:
    """Build the WSGI app: FHIR REST under /fhir, errors as OperationOutcomes."""
    settings = settings or Settings.from_env()
    db = db or Database(settings.database_url, statement_timeout=settings.request_seconds)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    services = build_services(settings, db)
    app.extensions["fhir_services"] = services
    init_app(app, services)
    app.register_blueprint(fhir_blueprint)

    @app.errorhandler(FhirError)
    def _fhir_error(error: FhirError) -> Response:
        return io.error_response(error, _safe_format())

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        status = error.code or 500
        fhir = FhirError(status, _HTTP_CODES.get(status, "exception"),
                         error.description or error.name)
        response = io.error_response(fhir, _safe_format())
        if status == 405 and error.get_headers():
            for key, value in error.get_headers():
                if key.lower() == "allow":
                    response.headers["Allow"] = value
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        log.exception("Unhandled error on %s %s", request.method, request.path)
        fhir = FhirError(500, "exception", "Internal server error; the request was not applied")
        return io.error_response(fhir, _safe_format())

    return app


def _safe_format() -> str:
    try:
        return io.wanted_format(request)
    except FhirError:
        return "json"
