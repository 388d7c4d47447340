"""How an app's requests reach a server: over HTTP, or in process through this server's own
WSGI stack.

`InProcess` builds a WSGI environ and runs the whole Flask application for it, exactly as a
request from the network would run: bearer authentication, the access policy, audit, error
pages. It only saves the socket. It is used for URLs on this server's own origin when the
apps are not pointed at another server (`FHIR_SERVER_WEB_API_BASE` empty); everything else
goes over HTTP with `requests` (keep-alive session, timeout on every call).
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests
from werkzeug.test import EnvironBuilder, run_wsgi_app


@dataclass(frozen=True)
class Reply:
    """A server's answer."""

    status: int
    headers: dict[str, str]
    body: bytes = b""

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


class Unreachable(Exception):
    """The server did not answer (connection refused, timeout, DNS)."""

    def __init__(self, url: str, why: str) -> None:
        super().__init__(f"{url}: {why}")
        self.url = url
        self.why = why


class Transport(Protocol):
    def send(self, method: str, url: str, headers: dict[str, str],
             body: bytes | None = None) -> Reply: ...


_SESSION = requests.Session()


@dataclass
class OverHttp:
    """Requests over the network (a shared keep-alive session)."""

    timeout: float = 10.0

    def send(self, method: str, url: str, headers: dict[str, str],
             body: bytes | None = None) -> Reply:
        try:
            response = _SESSION.request(method, url, headers=headers, data=body,
                                        timeout=self.timeout, allow_redirects=False)
        except requests.RequestException as exc:
            raise Unreachable(url, type(exc).__name__) from None
        return Reply(response.status_code,
                     {k.lower(): v for k, v in response.headers.items()}, response.content)


@dataclass
class InProcess:
    """Requests to `origin` run through `wsgi_app` in this process; others go over HTTP."""

    wsgi_app: Any
    origin: str  # "http://host:port" as the browser sees this server
    remote_addr: str = "127.0.0.1"  # the browser's address, so that audit records it
    fallback: OverHttp = field(default_factory=OverHttp)

    def handles(self, url: str) -> bool:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc}" == self.origin

    def send(self, method: str, url: str, headers: dict[str, str],
             body: bytes | None = None) -> Reply:
        if not self.handles(url):
            return self.fallback.send(method, url, headers, body)
        parts = urlsplit(url)
        builder = EnvironBuilder(path=parts.path, query_string=parts.query, method=method,
                                 base_url=self.origin, headers=headers, data=body or b"")
        environ = builder.get_environ()
        environ["REMOTE_ADDR"] = self.remote_addr
        # A fresh context: the inner request gets its own app and request context, so
        # nothing of the page's context leaks into the API call or back.
        return contextvars.Context().run(self._run, environ)

    def _run(self, environ: dict[str, Any]) -> Reply:
        app_iter, status, headers = run_wsgi_app(self.wsgi_app, environ, buffered=True)
        try:
            body = b"".join(app_iter)
        finally:
            close = getattr(app_iter, "close", None)
            if close is not None:
                close()
        return Reply(int(status.split(" ", 1)[0]),
                     {k.lower(): v for k, v in headers.items()}, body)
