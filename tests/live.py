"""A real server on a loopback port and an HTTP client that checks every response body."""

from __future__ import annotations

import json
import threading
from functools import lru_cache
from typing import Any

import jsonschema
import requests
from werkzeug.serving import make_server

from tests.reference_data import fhir_schema

FHIR_JSON = "application/fhir+json"


class LiveServer:
    """Runs a WSGI app on 127.0.0.1:<free port> in a background thread (threaded server)."""

    def __init__(self, app: Any) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@lru_cache(maxsize=1)
def _schema() -> dict:
    return fhir_schema()


@lru_cache(maxsize=256)
def schema_validator(res_type: str) -> jsonschema.protocols.Validator:
    """A validator for one resource type (the root schema's oneOf is needlessly slow)."""
    schema = dict(_schema())
    schema.pop("oneOf", None)
    schema["$ref"] = f"#/definitions/{res_type}"
    return jsonschema.Draft6Validator(schema)


def assert_valid_fhir(body: Any) -> None:
    """Fail unless `body` is valid against the official R4 JSON schema. A Bundle's entry
    resources are checked each against its own type (the schema's any-resource choice is
    very slow on large Bundles); the rest of the Bundle against the Bundle schema."""
    assert isinstance(body, dict) and isinstance(body.get("resourceType"), str), body
    assert body["resourceType"] in _schema()["discriminator"]["mapping"], body["resourceType"]
    if body["resourceType"] == "Bundle" and body.get("entry"):
        shell = dict(body, entry=[])
        for entry in body["entry"]:
            inner = entry.get("resource") if isinstance(entry, dict) else None
            shell["entry"].append({k: v for k, v in entry.items() if k != "resource"}
                                  if isinstance(entry, dict) else entry)
            if inner is not None:
                assert_valid_fhir(inner)
            outcome = (entry.get("response") or {}).get("outcome") \
                if isinstance(entry, dict) else None
            if outcome is not None:
                assert_valid_fhir(outcome)
        for entry in shell["entry"]:
            if isinstance(entry, dict) and isinstance(entry.get("response"), dict):
                entry["response"] = {k: v for k, v in entry["response"].items()
                                     if k != "outcome"}
        body = shell
    validator = schema_validator(body["resourceType"])
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        raise AssertionError(f"invalid FHIR JSON at {list(first.absolute_path)}: "
                             f"{first.message[:300]}")


class FhirHttp:
    """requests against the live server; every JSON body is schema-checked, and every error
    must be an OperationOutcome."""

    def __init__(self, base: str, headers: dict[str, str] | None = None) -> None:
        self.base = base
        self.session = requests.Session()
        self.session.headers.update({"Accept": FHIR_JSON})
        self.session.headers.update(headers or {})

    def request(self, method: str, path: str, *, json_body: Any = None, data: Any = None,
                headers: dict[str, str] | None = None, **kwargs: Any) -> requests.Response:
        url = path if path.startswith("http") else f"{self.base}/{path.lstrip('/')}"
        hdrs = dict(headers or {})
        if json_body is not None:
            data = json.dumps(json_body)
            hdrs.setdefault("Content-Type", FHIR_JSON)
        response = self.session.request(method, url, data=data, headers=hdrs, timeout=60,
                                        **kwargs)
        check_response(response)
        return response

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> requests.Response:
        return self.request("POST", path, json_body=body, **kw)

    def put(self, path: str, body: Any = None, **kw: Any) -> requests.Response:
        return self.request("PUT", path, json_body=body, **kw)

    def delete(self, path: str, **kw: Any) -> requests.Response:
        return self.request("DELETE", path, **kw)

    def patch(self, path: str, ops: Any, **kw: Any) -> requests.Response:
        headers = {"Content-Type": "application/json-patch+json", **kw.pop("headers", {})}
        return self.request("PATCH", path, data=json.dumps(ops), headers=headers, **kw)


def check_response(response: requests.Response) -> None:
    """Every body is valid FHIR JSON; every error body is an OperationOutcome; no 500s."""
    assert response.status_code < 500, f"server error {response.status_code}: {response.text}"
    if not response.content:
        return
    ctype = response.headers.get("Content-Type", "")
    if "json" not in ctype:
        return
    body = response.json()
    assert_valid_fhir(body)
    if response.status_code >= 400:
        assert body.get("resourceType") == "OperationOutcome", body
        assert body.get("issue"), body
