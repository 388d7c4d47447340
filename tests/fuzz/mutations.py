"""Hostile requests made by mutating valid ones: types, sizes, nesting, encodings, headers,
URLs and methods. Everything is drawn from one `random.Random`, so a seed reproduces a run.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.samples import sample

ROOT = Path(__file__).resolve().parents[2]
JSON = "application/fhir+json"
TYPES = ("Patient", "Task", "ServiceRequest", "QuestionnaireResponse", "Observation",
         "Condition", "Consent", "Organization")


@dataclass
class FuzzRequest:
    """One HTTP request to send (path relative to /fhir)."""

    method: str
    path: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    label: str = ""

    def describe(self) -> str:
        body = (self.body or b"")[:300]
        return f"{self.label}: {self.method} /fhir/{self.path[:300]} {self.headers} {body!r}"


def referral_bundle() -> dict:
    return json.loads((ROOT / "examples" / "referral-bundle-1.json").read_text())


def valid_requests(ids: dict[str, str]) -> list[FuzzRequest]:
    """Valid requests of every kind the server takes; `ids` maps types to existing ids."""
    out = []
    for res_type in TYPES:
        body = json.dumps(sample(res_type)).encode()
        out.append(FuzzRequest("POST", res_type, body, {"Content-Type": JSON}, "create"))
        if res_type in ids:
            updated = dict(sample(res_type), id=ids[res_type])
            out.append(FuzzRequest("PUT", f"{res_type}/{ids[res_type]}",
                                   json.dumps(updated).encode(), {"Content-Type": JSON},
                                   "update"))
            out.append(FuzzRequest("GET", f"{res_type}/{ids[res_type]}", label="read"))
            out.append(FuzzRequest("GET", f"{res_type}/{ids[res_type]}/_history/1",
                                   label="vread"))
            out.append(FuzzRequest(
                "PATCH", f"{res_type}/{ids[res_type]}",
                json.dumps([{"op": "replace", "path": "/id", "value": ids[res_type]}]).encode(),
                {"Content-Type": "application/json-patch+json"}, "patch"))
    out.append(FuzzRequest("POST", "", json.dumps(referral_bundle()).encode(),
                           {"Content-Type": JSON}, "transaction"))
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Patient?name=Rivera"}},
        {"request": {"method": "POST", "url": "Patient"}, "resource": sample("Patient")}]}
    out.append(FuzzRequest("POST", "", json.dumps(batch).encode(), {"Content-Type": JSON},
                           "batch"))
    for query in ("Task?status=requested&_include=Task:focus", "Patient?name=Ana&_count=5",
                  "ServiceRequest?subject.identifier=http://hospital.example/mrn|MRN-1",
                  "Patient?_has:Task:patient:status=requested", "Observation?code=44261-6",
                  "Task?_sort=-_lastUpdated&_total=accurate", "Patient?_revinclude=*",
                  "Task?_lastUpdated=gt2020-01-01&_elements=status"):
        out.append(FuzzRequest("GET", query, label="search"))
    params = {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": sample("Patient")}]}
    out.append(FuzzRequest("POST", "Patient/$validate", json.dumps(params).encode(),
                           {"Content-Type": JSON}, "operation"))
    out.append(FuzzRequest("POST", "HealthcareService/$match", json.dumps(
        {"resourceType": "Parameters", "parameter": [{"name": "category",
                                                     "valueString": "therapy"}]}).encode(),
        {"Content-Type": JSON}, "operation"))
    out.append(FuzzRequest("GET", "metadata", label="metadata"))
    out.append(FuzzRequest("GET", "_history?_count=3", label="history"))
    return out


# -- mutation operators on JSON trees -----------------------------------------------------
def _paths(node: Any, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*path, i))
    return out


def _replace(tree: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    tree = copy.deepcopy(tree)
    node = tree
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return tree


def _odd_value(rng: random.Random) -> Any:
    return rng.choice([
        None, True, False, 0, -1, 2**31, 2**63, -(2**64), 1e308, -1e-308, 0.1, 1.50,
        "", " ", "\x00", "\u202e", "😀" * 3, "a" * rng.choice([1, 100, 70_000]),
        "../../etc/passwd", "<script>", "Patient/../x", "urn:uuid:nowhere",
        "2026-13-45", "9999-12-31T23:59:59+14:00", [], [None], {}, {"": ""},
        {"resourceType": "Patient"}, [[[]]], "Patient?identifier=x|y",
    ])


def mutate_tree(tree: Any, rng: random.Random) -> tuple[Any, str]:
    """One structural mutation of a JSON tree and what it did."""
    path = rng.choice(_paths(tree))
    op = rng.randrange(6)
    if op == 0:
        return _replace(tree, path, _odd_value(rng)), f"value at {path}"
    if op == 1:  # nesting
        depth = rng.choice([10, 63, 64, 65, 200, 900])
        value: Any = "x"
        for _ in range(depth):
            value = [value] if rng.random() < 0.5 else {"a": value}
        return _replace(tree, path, value), f"nesting {depth} at {path}"
    if op == 2:  # sizes
        size = rng.choice([1000, 20_000])
        items = [sample("Observation")] * 500 if rng.random() < 0.3 else ["x"] * size
        return _replace(tree, path, items), f"array {len(items)} at {path}"
    if op == 3 and isinstance(tree, dict):  # unknown or removed element
        out = copy.deepcopy(tree)
        if out and rng.random() < 0.5:
            out.pop(rng.choice(list(out)))
            return out, "removed an element"
        out[rng.choice(["foo", "_status", "resourceType ", "", "extension"])] = _odd_value(rng)
        return out, "added an element"
    if op == 4 and isinstance(tree, dict):  # wrong resource type
        return dict(tree, resourceType=rng.choice(
            ["Patient", "Bundle", "Parameters", "Nope", "", 5, None])), "resourceType"
    return _replace(tree, path, {"reference": rng.choice(
        ["Patient/", "Patient/x/_history/y", "http://evil.example/Patient/1", "#", "#nope",
         "Patient?", "urn:uuid:" + "f" * 36, "Task/" + "a" * 100])}), f"reference at {path}"


# -- byte-level mutations ------------------------------------------------------------------
def mutate_bytes(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One encoding-level mutation of a JSON body."""
    op = rng.randrange(9)
    if op == 0:
        return data.decode().encode("utf-16"), "UTF-16"
    if op == 1:
        return data.decode().encode("latin-1", "replace") + b"\xe9\xff", "latin-1 bytes"
    if op == 2:
        cut = rng.randrange(max(len(data), 1))
        return data[:cut], f"truncated at {cut}"
    if op == 3:
        return data + rng.choice([b"}", b"garbage", b"\x00", b"{}"]), "trailing data"
    if op == 4:
        return b"\xef\xbb\xbf" + data, "byte-order mark"
    if op == 5 and data.startswith(b"{"):
        return b'{"resourceType":"Patient",' + data[1:], "duplicate key"
    if op == 6:
        return data.replace(b":", b":NaN,\"x\":", 1), "NaN"
    if op == 7:
        return data.replace(b'"', b'"\\ud800', 1), "lone surrogate"
    number = rng.choice([b"1e400", b"-1e-400", b"9" * 400, b"1" * 30 + b".5", b"0.0e99999"])
    return data.replace(b'"final"', number, 1).replace(b'"requested"', number, 1) \
        .replace(b'"female"', number, 1), "big number"


def mutate_headers(req: FuzzRequest, rng: random.Random) -> str:
    """One header-level mutation, in place."""
    choice = rng.randrange(10)
    if choice == 0:
        req.headers["Content-Type"] = rng.choice([
            "text/plain", "application/fhir+xml", "application/json-patch+json",
            "application/fhir+json; charset=latin-1", "multipart/form-data; boundary=x",
            "application/x-www-form-urlencoded", "", "*/*", "application/fhir+json;;;"])
        return "Content-Type"
    if choice == 1:
        req.headers["Accept"] = rng.choice([
            "application/fhir+xml", "text/csv", "image/png", "*/*;q=abc", "application/json",
            "application/fhir+json; fhirVersion=3.0"])
        return "Accept"
    if choice == 2:
        req.headers["Prefer"] = rng.choice([
            "return=minimal", "return=OperationOutcome", "handling=strict", "return=",
            "respond-async", "return=representation;;;", "x" * 5000])
        return "Prefer"
    if choice == 3:
        req.headers["If-Match"] = rng.choice([
            'W/"1"', 'W/"99999999999999999999"', "*", 'W/"-1"', '"abc"', "", 'W/"1", W/"2"'])
        return "If-Match"
    if choice == 4:
        req.headers["If-None-Exist"] = rng.choice([
            "identifier=x|y", "", "=", "unknown=1", "_id=" + ",".join(["a"] * 2000),
            "part-of:Task.part-of:Task.part-of:Task.part-of:Task.part-of=x"])
        return "If-None-Exist"
    if choice == 5:
        req.headers[rng.choice(["Idempotency-Key", "X-Request-Id"])] = rng.choice(
            ["k", "k" * 300, "a b", "é", "'\""])
        return "idempotency key"
    if choice == 6:
        req.headers["If-None-Match"] = rng.choice(['W/"1"', "*", "garbage"])
        return "If-None-Match"
    if choice == 7:
        req.headers["If-Modified-Since"] = rng.choice(["yesterday", "Mon, 99 Foo 2020",
                                                        "Sun, 06 Nov 1994 08:49:37 GMT"])
        return "If-Modified-Since"
    if choice == 8:
        req.headers["X-Big"] = "v" * rng.choice([100, 9000, 20_000])
        return "big header"
    req.headers["Content-Encoding"] = rng.choice(["gzip", "br", "identity", "x"])
    return "Content-Encoding"


def mutate_url(path: str, rng: random.Random) -> tuple[str, str]:
    """One URL mutation."""
    choice = rng.randrange(8)
    if choice == 0:
        return path + rng.choice(["/", "//", "/..", "/%2e%2e", "/$nope", "/_history/x",
                                  "/_history/-1", "/Patient", "/%00", "/é"]), "path suffix"
    if choice == 1:
        res_type = rng.choice(list(TYPES) + ["Nope", "patient", "Bundle", "$meta"])
        return f"{res_type}/{rng.choice(['x', 'a' * 65, '-', '..', '%20', '1' * 30])}", "id"
    base = path.split("?")[0] or "Patient"
    if choice == 2:
        name = rng.choice(["_count", "_sort", "_include", "_revinclude", "_elements",
                           "_summary", "_total", "_cursor", "_since", "_type", "_format",
                           "_has:Task:patient:status", "name:exact", "status:not",
                           "_lastUpdated", "identifier:of-type", "subject:Patient.name"])
        value = rng.choice(["", "-1", "99999999999999999999", "*", "Task:*", "*:iterate",
                            "abc", "gt", "ge2020-13-01", "%", "\\,,", "a" * 5000, "ü",
                            "true", "0", "1e400", "Patient:subject:Nope"])
        sep = "&" if "?" in path else "?"
        return f"{path}{sep}{name}={value}", f"{name}={value[:20]}"
    if choice == 3:
        return base + "?" + "&".join(f"name{i}=x" for i in range(rng.choice([50, 1200]))), \
            "many parameters"
    if choice == 4:
        return base + "?_id=" + ",".join(str(i) for i in range(rng.choice([10, 1500]))), \
            "many values"
    if choice == 5:
        return base + "?" + ".".join(["part-of:Task"] * rng.choice([2, 3, 4, 10])) + \
            ".status=x", "chain"
    if choice == 6:
        return base + "?_has:" + ":".join(["Task:patient"] * rng.choice([2, 5])) + \
            ":status=x", "_has"
    return path + rng.choice(["?_format=xml", "?_format=text/csv", "?_format=nope",
                              "?_pretty=true"]), "format"


def hostile_requests(base: list[FuzzRequest], rng: random.Random,
                     count: int) -> list[FuzzRequest]:
    """`count` mutated requests derived from `base`."""
    kinds: list[Callable[[FuzzRequest], FuzzRequest]] = []

    def tree(req: FuzzRequest) -> FuzzRequest:
        body = json.loads(req.body) if req.body and req.headers.get(
            "Content-Type") == JSON else sample(rng.choice(TYPES))
        mutated, what = mutate_tree(body, rng)
        text = json.dumps(mutated, allow_nan=True).encode()
        return FuzzRequest(req.method if req.body else "POST",
                           req.path if req.body else str(body.get("resourceType")),
                           text, {"Content-Type": JSON}, f"tree: {what}")

    def raw(req: FuzzRequest) -> FuzzRequest:
        data = req.body or json.dumps(sample(rng.choice(TYPES))).encode()
        mutated, what = mutate_bytes(data, rng)
        return FuzzRequest(req.method if req.body else "POST",
                           req.path if req.body else rng.choice(TYPES), mutated,
                           {"Content-Type": JSON}, f"bytes: {what}")

    def headers(req: FuzzRequest) -> FuzzRequest:
        out = FuzzRequest(req.method, req.path, req.body, dict(req.headers))
        out.label = f"header: {mutate_headers(out, rng)}"
        return out

    def url(req: FuzzRequest) -> FuzzRequest:
        path, what = mutate_url(req.path, rng)
        return FuzzRequest(req.method, path, req.body, dict(req.headers), f"url: {what}")

    def method(req: FuzzRequest) -> FuzzRequest:
        verb = rng.choice(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
        return FuzzRequest(verb, req.path, req.body, dict(req.headers), f"method {verb}")

    kinds = [tree, tree, tree, raw, raw, headers, url, url, method]
    return [rng.choice(kinds)(rng.choice(base)) for _ in range(count)]
