"""Test support for the conformance kit: our server with auth on (Backend Services clients for
four organizations) plus the delivery worker, a WSGI "breaker" in front of the same app that
makes the server non-conformant in one named way at a time, and a relay that alters the
notifications the worker sends to the kit's receiver."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import requests
from joserfc.jwk import RSAKey

from fhir_server.conformance.config import Party, RunConfig
from tests.live import LiveServer

PLATFORM_ORG = "Organization/kit-platform"
PARTIES = {"source": ("kit-ehr", "Organization/kit-ehr"),
           "recipient": ("kit-cbo", "Organization/kit-cbo"),
           "platform": ("kit-platform", PLATFORM_ORG),
           "other": ("kit-other", "Organization/kit-other")}
# the simulated partners' own recipient organization (no other test leaves Tasks for it)
SIM_RECIPIENT = ("kit-sim-cbo", "Organization/kit-sim-cbo")


@dataclass
class KitServer:
    """Our server under test, reached directly (`base`) or through the breaker (`broken`)."""

    base: str
    broken_base: str
    key_file: Path
    breaker: Breaker
    database: Any
    stops: list[Callable[[], None]] = field(default_factory=list)

    def config(self, actor: str, *, broken: bool = False, tests: Iterable[str] = (),
               **kw: Any) -> RunConfig:
        base = self.broken_base if broken else self.base
        parties = {role: Party(role, org, client, self.key_file)
                   for role, (client, org) in PARTIES.items()}
        # generous time-outs: on a loaded 2-core machine one search once took over 30 s
        return RunConfig(base=base, actor=actor, auth="backend", parties=parties,
                         tests=tuple(tests), wait=kw.pop("wait", 30.0),
                         timeout=kw.pop("timeout", 120.0),
                         token_url=base.rsplit("/fhir", 1)[0] + "/auth/token", quiet=True,
                         **kw)

    def cli_auth(self, role: str = "source") -> list[str]:
        client, org = SIM_RECIPIENT if role == "sim-recipient" else PARTIES[role]
        return ["--auth", "backend", "--client-id", client, "--key-file", str(self.key_file),
                "--organization", org]

    def cli_parties(self) -> list[str]:
        out: list[str] = []
        for role in ("recipient", "platform", "other"):
            client, org = PARTIES[role]
            out += ["--party", f"{role}={client},{self.key_file},{org}"]
        return out


def start_kit_server(database: Any, tmp: Path) -> KitServer:
    from fhir_server.app import create_app
    from fhir_server.auth.cli import add_client
    from fhir_server.config import Settings
    from fhir_server.seed import seed_definitions
    from fhir_server.worker import run as run_worker

    url = database.url.render_as_string(hide_password=False)
    settings = Settings.from_env(database_url=url, base_url="", auth_mode="on",
                                 platform_organization=PLATFORM_ORG,
                                 allow_plain_http_full_resource=True)
    app = create_app(settings, db=database)
    seed_definitions(app.extensions["fhir_services"])
    key = RSAKey.generate_key(2048, parameters={"kid": "kit-1", "alg": "RS384"}, private=True)
    key_file = tmp / "kit-client.jwk"
    key_file.write_text(json.dumps(key.as_dict(private=True)))
    for client, org in [*PARTIES.values(), SIM_RECIPIENT]:
        add_client(database, client, org, "system/*.cruds",
                   jwks={"keys": [key.as_dict(private=False)]})
    live = LiveServer(app)
    breaker = Breaker(app)
    broken = LiveServer(breaker)
    stop = threading.Event()
    worker_settings = Settings.from_env(database_url=url, base_url=live.base, auth_mode="on",
                                        platform_organization=PLATFORM_ORG)
    # default back-off: the Subscriptions of finished runs (their receivers are gone, and
    # partners cannot delete them today) are retried seldom, not hammered
    overrides = {"poll_interval": 0.05, "threads": 2, "lease_seconds": 3.0}
    thread = threading.Thread(target=run_worker, args=(worker_settings,), daemon=True,
                              kwargs={"sweep_interval": 3600.0, "stop": stop,
                                      "overrides": overrides})
    thread.start()
    server = KitServer(live.base, broken.base, key_file, breaker, database)

    def stop_all() -> None:
        stop.set()
        thread.join(30)
        broken.stop()
        live.stop()
    server.stops.append(stop_all)
    return server


# -- the breaker: one non-conformance at a time -------------------------------------------
Captured = tuple[str, list[tuple[str, str]], bytes]  # status line, headers, body
Variant = Callable[[dict, Callable[[dict], Captured]], Captured]


def _call(app: Any, environ: dict) -> Captured:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list, exc_info: Any = None) -> Any:
        seen["status"], seen["headers"] = status, headers
        return lambda _data: None
    body = b"".join(app(environ, start_response))
    return seen["status"], list(seen["headers"]), body


def _json_response(status: str, body: Any, headers: list[tuple[str, str]]) -> Captured:
    data = json.dumps(body).encode()
    kept = [(k, v) for k, v in headers if k.lower() not in ("content-length", "content-type")]
    return status, kept + [("Content-Type", "application/fhir+json"),
                           ("Content-Length", str(len(data)))], data


def _body_of(environ: dict) -> bytes:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    data = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = BytesIO(data)
    return data


def _path(environ: dict) -> str:
    return environ.get("PATH_INFO", "")


def rewrite_json(match: Callable[[dict], bool], change: Callable[[Any, dict], Any]) -> Variant:
    """Alter the JSON body of responses to matching requests."""
    def variant(environ: dict, call: Callable[[dict], Captured]) -> Captured:
        status, headers, body = call(environ)
        if not match(environ) or not body.startswith(b"{"):
            return status, headers, body
        return _json_response(status, change(json.loads(body), environ), headers)
    return variant


def drop_query(path: str, *names: str) -> Variant:
    """The server ignores these search parameters (removed before it sees them)."""
    def variant(environ: dict, call: Callable[[dict], Captured]) -> Captured:
        if environ["REQUEST_METHOD"] == "GET" and _path(environ) == path:
            pairs = [(k, v) for k, v in parse_qsl(environ.get("QUERY_STRING", ""),
                                                  keep_blank_values=True) if k not in names]
            environ = {**environ, "QUERY_STRING": urlencode(pairs)}
        return call(environ)
    return variant


def accept_refused(condition: Callable[[dict, Captured], bool]) -> Variant:
    """A refused Task update is answered 200 with the submitted body (the server 'accepts'
    it: the kit sees the write succeed)."""
    def variant(environ: dict, call: Callable[[dict], Captured]) -> Captured:
        if environ["REQUEST_METHOD"] != "PUT" or not _path(environ).startswith("/fhir/Task/"):
            return call(environ)
        sent = _body_of(environ)
        status, headers, body = call(environ)
        if status[:1] == "4" and condition(json.loads(sent or b"{}"), (status, headers, body)):
            return _json_response("200 OK", json.loads(sent), headers)
        return status, headers, body
    return variant


def answer(match: Callable[[dict], bool], status: str, diagnostics: str) -> Variant:
    def variant(environ: dict, call: Callable[[dict], Captured]) -> Captured:
        if match(environ):
            _body_of(environ)
            return _json_response(status, {"resourceType": "OperationOutcome", "issue": [{
                "severity": "error", "code": "not-supported", "diagnostics": diagnostics}]},
                [])
        return call(environ)
    return variant


def _is(method: str, path: str) -> Callable[[dict], bool]:
    return lambda e: e["REQUEST_METHOD"] == method and _path(e) == path


def _tasks_in(body: Any, change: Callable[[dict], None]) -> Any:
    items = [e.get("resource") for e in body.get("entry") or []] \
        if body.get("resourceType") == "Bundle" else [body]
    for res in items:
        if isinstance(res, dict) and res.get("resourceType") == "Task":
            change(res)
    return body


def _cap(change: Callable[[dict], None]) -> Callable[[Any, dict], Any]:
    def apply(body: Any, _env: dict) -> Any:
        change(body)
        return body
    return apply


def _drop_task_param(cap: dict) -> None:
    for res in cap["rest"][0]["resource"]:
        if res["type"] == "Task":
            res["searchParam"] = [p for p in res["searchParam"] if p["name"] != "focus"]


def _diag(captured: Captured) -> str:
    return captured[2].decode("utf-8", "replace")


VARIANTS: dict[str, Variant] = {
    "cap-search-param-missing": rewrite_json(_is("GET", "/fhir/metadata"),
                                             _cap(_drop_task_param)),
    "cap-no-xml-format": rewrite_json(_is("GET", "/fhir/metadata"), _cap(
        lambda c: c.update(format=["application/fhir+json", "json"]))),
    "cap-wrong-fhir-version": rewrite_json(_is("GET", "/fhir/metadata"), _cap(
        lambda c: c.update(fhirVersion="3.0.2"))),
    "search-ignores-status": drop_query("/fhir/Task", "status"),
    "search-ignores-id": drop_query("/fhir/Task", "_id"),
    "search-ignores-include": drop_query("/fhir/Task", "_include"),
    "search-ignores-sr-patient": drop_query("/fhir/ServiceRequest", "patient"),
    "accepts-received-status": accept_refused(lambda sent, _r: sent.get("status") in (
        "received", "ready")),
    "accepts-illegal-transition": accept_refused(lambda sent, r: "allowed next" in _diag(r)
                                                 or "final" in _diag(r)),
    "owner-may-change-focus": accept_refused(lambda sent, r: "Task.focus" in _diag(r)),
    "completes-without-output": accept_refused(lambda sent, _r: sent.get("status") ==
                                               "completed" and not sent.get("output")),
    "ignores-stale-if-match": accept_refused(lambda sent, r: r[0].startswith("412")),
    "task-profile-violation": rewrite_json(
        lambda e: e["REQUEST_METHOD"] == "GET" and _path(e).startswith("/fhir/Task"),
        lambda body, _e: _tasks_in(body, lambda t: t.update(intent="plan"))),
    "no-xml": answer(lambda e: "xml" in e.get("HTTP_ACCEPT", "") or "_format=xml" in
                     e.get("QUERY_STRING", ""), "406 Not Acceptable", "only JSON"),
    "no-smart-discovery": answer(_is("GET", "/fhir/.well-known/smart-configuration"),
                                 "404 Not Found", "no SMART configuration"),
    "email-channel-refused": answer(
        lambda e: e["REQUEST_METHOD"] == "POST" and _path(e) == "/fhir/Subscription" and
        b'"email"' in _body_of(e), "422 Unprocessable Entity", "only rest-hook"),
    "platform-original-order": rewrite_json(
        lambda e: e["REQUEST_METHOD"] == "GET" and _path(e).startswith("/fhir/ServiceRequest/"),
        lambda body, _e: body.update(intent="original-order") or body
        if body.get("intent") == "filler-order" else body),
}


class Breaker:
    """WSGI middleware: passes everything through unless `mode` names a variant."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.mode: str | None = None

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        variant = VARIANTS.get(self.mode or "")
        if variant is None:
            return self.app(environ, start_response)
        status, headers, body = variant(environ, lambda env: _call(self.app, env))
        start_response(status, headers)
        return [body]


# -- the relay: altered notifications ----------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Relay:
    """Receives the server's notifications, alters them with `change(bundle)` and forwards
    them to the kit's receiver (`target`)."""

    def __init__(self, target: str, change: Callable[[dict], dict]) -> None:
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                bundle = relay.change(json.loads(data))
                resp = requests.post(relay.target + self.path, json=bundle, timeout=10,
                                     headers={"Content-Type": "application/fhir+json"})
                self.send_response(resp.status_code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.target = target.rstrip("/")
        self.change = change
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _status_params(bundle: dict) -> list[dict]:
    return bundle["entry"][0]["resource"]["parameter"]


def handshake_active(bundle: dict) -> dict:
    params = _status_params(bundle)
    if any(p["name"] == "type" and p.get("valueCode") == "handshake" for p in params):
        for p in params:
            if p["name"] == "status":
                p["valueCode"] = "active"
    return bundle


def no_events_since_start(bundle: dict) -> dict:
    bundle["entry"][0]["resource"]["parameter"] = [
        p for p in _status_params(bundle) if p["name"] != "events-since-subscription-start"]
    return bundle


def id_only_with_body(bundle: dict) -> dict:
    for entry in bundle.get("entry", [])[1:]:
        entry["resource"] = {"resourceType": "Task", "id": entry.get("fullUrl", "").rsplit(
            "/", 1)[-1], "status": "accepted"}
    return bundle


RELAYED = {"handshake-not-requested": handshake_active,
           "notifications-without-events-since-start": no_events_since_start,
           "id-only-with-resource-bodies": id_only_with_body}
