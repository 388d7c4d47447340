"""Errors raised by the HTTP server itself (gunicorn, as `python -m fhir_server serve` runs
it) are OperationOutcomes too: a request line too long (414), header fields too large (431),
a broken chunked body (400), a malformed request line (400)."""

from __future__ import annotations

import socket

import pytest

from tests.processes import init_db, start_server


@pytest.fixture(scope="module")
def gunicorn(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('stack') / 'stack.sqlite3'}"
    init_db(url)
    server = start_server(url, workers=1, threads=2)
    yield server
    server.stop()


def _exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read the whole response (the server closes the connection)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(raw)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep and b"content-length:" in head.lower():
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(body) >= length:
                    break
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def _outcome(status: int, headers: dict[str, str], body: bytes) -> dict:
    import json

    assert headers["content-type"].startswith("application/fhir+json"), (status, body[:200])
    outcome = json.loads(body)
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"], outcome
    return outcome["issue"][0]


def test_request_line_too_long_is_414(gunicorn):
    raw = b"GET /fhir/Patient?name=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    status, headers, body = _exchange(gunicorn.port, raw)
    assert status == 414
    issue = _outcome(status, headers, body)
    assert issue["code"] == "too-long" and "_search" in issue["diagnostics"]


def test_header_fields_too_large_is_431(gunicorn):
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(200))
    status, headers, body = _exchange(gunicorn.port, b"GET /fhir/metadata HTTP/1.1\r\n"
                                      b"Host: x\r\n" + many + b"\r\n")
    assert status == 431
    assert _outcome(status, headers, body)["code"] == "too-long"
    big = b"X-Big: " + b"v" * 9000 + b"\r\n"
    status, headers, body = _exchange(gunicorn.port, b"GET /fhir/metadata HTTP/1.1\r\n"
                                      b"Host: x\r\n" + big + b"\r\n")
    assert status in (400, 431)
    _outcome(status, headers, body)


def test_bad_chunk_size_is_400(gunicorn):
    raw = (b"POST /fhir/Patient HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\n"
           b"Transfer-Encoding: chunked\r\n\r\nZZZ\r\nabc\r\n0\r\n\r\n")
    status, headers, body = _exchange(gunicorn.port, raw)
    assert status == 400
    issue = _outcome(status, headers, body)
    assert issue["expression"] == ["Patient"]


def test_chunked_body_that_ends_early_is_400(gunicorn):
    raw = (b"POST /fhir/Patient HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n10\r\n{\"resourceType\"")
    with socket.create_connection(("127.0.0.1", gunicorn.port), timeout=20) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        data = sock.recv(65536)
    assert data.startswith(b"HTTP/1.1 400"), data[:200]


@pytest.mark.parametrize("raw", [b"GARBAGE\r\n\r\n", b"GET /fhir/metadata HTTP/9.9\r\n\r\n",
                                 b"G\x00T / HTTP/1.1\r\nHost: x\r\n\r\n",
                                 b"GET /fhir/metadata HTTP/1.1\r\nBad Header\r\n\r\n"])
def test_malformed_requests_are_400(gunicorn, raw):
    status, headers, body = _exchange(gunicorn.port, raw)
    assert 400 <= status < 500
    _outcome(status, headers, body)


def test_server_still_serves(gunicorn):
    import requests

    assert requests.get(f"http://127.0.0.1:{gunicorn.port}/fhir/metadata",
                        timeout=10).status_code == 200
