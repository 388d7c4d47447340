"""The apps' FHIR client: every page reads and writes through this, with the signed-in user's
bearer token, so the server's access policy and audit apply to everything a page shows.

Errors become exceptions a page can show: `ApiError` (the server's status and the
OperationOutcome's issues, each with the FHIRPath expressions it names), `TokenRejected`
(401: the session must go back through sign-in) and `ServerDown` (no answer).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import orjson

from fhir_server.web.transport import Reply, Transport, Unreachable

FHIR_JSON = "application/fhir+json"
Params = Iterable[tuple[str, str]] | dict[str, str]


@dataclass(frozen=True)
class IssueText:
    """One OperationOutcome issue in words."""

    severity: str
    text: str
    expressions: tuple[str, ...] = ()


@dataclass
class ApiError(Exception):
    """A FHIR error answer: status plus the OperationOutcome's issues."""

    status: int
    issues: list[IssueText] = field(default_factory=list)
    url: str = ""

    def __post_init__(self) -> None:
        super().__init__(self.message)

    @property
    def message(self) -> str:
        texts = [i.text for i in self.issues if i.severity in ("fatal", "error")]
        return "; ".join(texts or [i.text for i in self.issues]) or f"HTTP {self.status}"


class TokenRejected(ApiError):
    """401: the access token is missing, expired or revoked."""


@dataclass
class ServerDown(Exception):
    """The server did not answer."""

    url: str
    why: str

    def __post_init__(self) -> None:
        super().__init__(f"{self.url} did not answer ({self.why})")


def outcome_issues(outcome: Any) -> list[IssueText]:
    """The issues of an OperationOutcome, each as text and expressions."""
    if not isinstance(outcome, dict) or outcome.get("resourceType") != "OperationOutcome":
        return []
    out = []
    for issue in outcome.get("issue") or []:
        text = issue.get("diagnostics") or (issue.get("details") or {}).get("text") \
            or issue.get("code") or "error"
        exprs = tuple(issue.get("expression") or issue.get("location") or ())
        out.append(IssueText(issue.get("severity") or "error", str(text), exprs))
    return out


@dataclass
class FhirApi:
    """A FHIR REST client for one base URL and one bearer token."""

    base: str
    transport: Transport
    token: str | None = None

    # -- plumbing ---------------------------------------------------------------------
    def url(self, path: str, params: Params | None = None) -> str:
        if path.startswith(("http://", "https://")):
            url = path
        else:
            url = f"{self.base}/{path.lstrip('/')}" if path else self.base
        if params:
            items = list(params.items()) if isinstance(params, dict) else list(params)
            url += ("&" if "?" in url else "?") + urlencode(items)
        return url

    def request(self, method: str, path: str, *, params: Params | None = None,
                body: Any = None, headers: dict[str, str] | None = None,
                content_type: str = FHIR_JSON) -> Any:
        """Send one request; the parsed JSON body (None when empty). Raises ApiError,
        TokenRejected or ServerDown."""
        url = self.url(path, params)
        hdrs = {"Accept": FHIR_JSON, **(headers or {})}
        if self.token:
            hdrs["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else orjson.dumps(body)
            hdrs["Content-Type"] = content_type
        try:
            reply = self.transport.send(method, url, hdrs, data)
        except Unreachable as exc:
            raise ServerDown(exc.url, exc.why) from None
        return self._parse(reply, url)

    def _parse(self, reply: Reply, url: str) -> Any:
        parsed = None
        if reply.body:
            try:
                parsed = orjson.loads(reply.body)
            except orjson.JSONDecodeError:
                parsed = None
        if reply.status == 401:
            raise TokenRejected(401, outcome_issues(parsed) or [
                IssueText("error", "The sign-in has expired")], url)
        if reply.status >= 400:
            issues = outcome_issues(parsed) or [
                IssueText("error", f"HTTP {reply.status} from {url.split('?')[0]}")]
            raise ApiError(reply.status, issues, url)
        if reply.body and parsed is None:
            raise ApiError(502, [IssueText("error", f"{url.split('?')[0]} did not return "
                                                    "JSON")], url)
        return parsed

    # -- FHIR interactions -----------------------------------------------------------
    def read(self, ref: str) -> dict:
        """GET Type/id."""
        return self.request("GET", ref)

    def search(self, res_type: str, params: Params | None = None) -> dict:
        """GET Type?params: the searchset Bundle."""
        return self.request("GET", res_type, params=params)

    def create(self, resource: dict, if_none_exist: str | None = None) -> dict:
        headers = {"Prefer": "return=representation"}
        if if_none_exist:
            headers["If-None-Exist"] = if_none_exist
        return self.request("POST", resource["resourceType"], body=resource, headers=headers)

    def update(self, resource: dict, etag: str | None = None) -> dict:
        headers = {"Prefer": "return=representation"}
        if etag:
            headers["If-Match"] = etag
        ref = f"{resource['resourceType']}/{resource['id']}"
        return self.request("PUT", ref, body=resource, headers=headers)

    def transaction(self, entries: list[dict]) -> dict:
        """POST a transaction Bundle; the transaction-response Bundle."""
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        return self.request("POST", "", body=bundle,
                            headers={"Prefer": "return=representation"})

    def batch(self, urls: list[str]) -> list[dict | ApiError]:
        """GET several URLs in one batch Bundle; each answer is a resource or an ApiError."""
        if not urls:
            return []
        bundle = {"resourceType": "Bundle", "type": "batch",
                  "entry": [{"request": {"method": "GET", "url": u}} for u in urls]}
        answer = self.request("POST", "", body=bundle)
        out: list[dict | ApiError] = []
        for url, entry in zip(urls, (answer or {}).get("entry") or [], strict=False):
            status = int(str((entry.get("response") or {}).get("status", "500"))[:3])
            if status >= 400:
                outcome = (entry.get("response") or {}).get("outcome") or entry.get("resource")
                out.append(ApiError(status, outcome_issues(outcome), url))
            else:
                out.append(entry.get("resource") or {})
        while len(out) < len(urls):
            out.append(ApiError(502, [IssueText("error", "no answer in the batch")]))
        return out

    def operation(self, path: str, params: Params | None = None, body: Any = None) -> Any:
        """Call a `$operation` (POST when there is a body, else GET)."""
        method = "POST" if body is not None else "GET"
        return self.request(method, path, params=params, body=body)


def entries(bundle: dict | None, mode: str = "match") -> list[dict]:
    """The resources of a searchset Bundle whose search mode is `mode`."""
    out = []
    for entry in (bundle or {}).get("entry") or []:
        resource = entry.get("resource")
        if resource and (entry.get("search") or {}).get("mode", "match") == mode:
            out.append(resource)
    return out


def next_link(bundle: dict | None) -> str | None:
    """The `next` page URL of a searchset Bundle."""
    for link in (bundle or {}).get("link") or []:
        if link.get("relation") == "next":
            return link.get("url")
    return None


def operation_parts(parameters: dict | None, name: str) -> list[dict]:
    """The parts of each `name` parameter of a Parameters resource, as {part name: value}
    (e.g. the events of `$timeline`)."""
    out = []
    for param in (parameters or {}).get("parameter") or []:
        if param.get("name") != name:
            continue
        parts: dict = {}
        for part in param.get("part") or []:
            parts[part.get("name")] = next(
                (v for k, v in part.items() if k.startswith("value")), None)
        out.append(parts)
    return out
