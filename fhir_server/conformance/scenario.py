"""The test data of one run: organizations, patient, consent, referrals, outcomes, created
once on first use and shared by the tests; removed afterwards unless `--keep`."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from fhir_server.conformance import resources as fx
from fhir_server.conformance.config import ROLES, RunConfig
from fhir_server.conformance.http import FhirClient, Response, ref_of
from fhir_server.conformance.model import SKIP, Stop


class Prerequisite(Exception):  # noqa: N818
    """Test data could not be created: the tests that need it are skipped."""


def etag_of(resource: dict[str, Any]) -> dict[str, str]:
    version = (resource.get("meta") or {}).get("versionId")
    return {"If-Match": f'W/"{version}"'} if version else {}


def describe(resp: Response) -> str:
    """A short account of a refused response for messages."""
    body = resp.json()
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        issues = "; ".join(str(i.get("diagnostics") or i.get("code"))
                           for i in body.get("issue") or [])
        return f"{resp.status} {issues[:300]}"
    return f"{resp.status} {resp.text[:200]}"


class Scenario:
    """Shared test data. Builders are memoized; a builder that failed fails the same way for
    every test that needs it (those tests are skipped, naming the failed step)."""

    def __init__(self, config: RunConfig, clients: dict[str, FhirClient]) -> None:
        self.config = config
        self.clients = clients
        self.run_id = "kit" + uuid.uuid4().hex[:10]
        self.created: list[tuple[str, str]] = []  # (role, "Type/id") in creation order
        self._memo: dict[str, Any] = {}
        self._counter = 0

    # memo --------------------------------------------------------------------------------
    def _once(self, name: str, build: Callable[[], Any]) -> Any:
        if name not in self._memo:
            try:
                self._memo[name] = build()
            except Prerequisite as exc:
                self._memo[name] = exc
            except ConnectionError as exc:
                self._memo[name] = Prerequisite(f"{name}: {exc}")
        value = self._memo[name]
        if isinstance(value, Prerequisite):
            raise Stop(SKIP, f"test data not available ({value})")
        return value

    def next_n(self) -> int:
        self._counter += 1
        return self._counter

    # writes ------------------------------------------------------------------------------
    def create(self, role: str, resource: dict[str, Any], what: str = "") -> dict[str, Any]:
        resp = self.clients[role].post(resource["resourceType"], resource,
                                       headers={"Prefer": "return=representation"})
        if resp.status not in (200, 201):
            raise Prerequisite(f"creating {what or resource['resourceType']} as {role} was "
                               f"refused: {describe(resp)}")
        body = resp.json()
        if not isinstance(body, dict) or not body.get("id"):
            location = resp.headers.get("location", "")
            rid = location.split(f"{resource['resourceType']}/", 1)[-1].split("/")[0]
            if not rid:
                raise Prerequisite(f"creating {resource['resourceType']} returned no id")
            body = self.read(role, f"{resource['resourceType']}/{rid}")
        self.created.append((role, ref_of(body)))
        return body

    def read(self, role: str, ref: str) -> dict[str, Any]:
        resp = self.clients[role].get(ref)
        if resp.status != 200 or not isinstance(resp.json(), dict):
            raise Prerequisite(f"reading {ref} as {role}: {describe(resp)}")
        return resp.json()

    def update_task(self, role: str, task: dict[str, Any], **changes: Any) -> Response:
        """PUT the Task with `changes` (None removes an element), version-aware."""
        body = {k: v for k, v in {**task, **changes}.items() if v is not None}
        return self.clients[role].put(ref_of(task), body, headers=etag_of(task))

    def advance(self, role: str, task: dict[str, Any], status: str,
                **changes: Any) -> dict[str, Any]:
        """Move a Task to `status` or raise Prerequisite."""
        resp = self.update_task(role, task, status=status, **changes)
        if resp.status != 200:
            raise Prerequisite(f"{role} moving {ref_of(task)} {task.get('status')} -> "
                               f"{status} was refused: {describe(resp)}")
        body = resp.json()
        return body if isinstance(body, dict) and body.get("status") == status else \
            self.read(role, ref_of(task))

    # data --------------------------------------------------------------------------------
    def orgs(self) -> dict[str, str]:
        """Organization reference per role (every role has one)."""
        return self._once("organizations", self._orgs)

    def _orgs(self) -> dict[str, str]:
        """A role's party names its organization. Without one: with --auth none the kit
        creates it; otherwise the role acts as the source, and "other" (used only as a value
        nobody matches) is a reference to no organization."""
        refs: dict[str, str] = {}
        for role in ROLES:
            party = self.config.parties.get(role)
            if party and party.organization:
                refs[role] = party.organization
                self._ensure_org(role, party.organization)
            elif self.config.auth == "none":
                refs[role] = ref_of(self.create("source", fx.organization(self.run_id, role),
                                                f"the {role} Organization"))
            elif role == "other":
                refs[role] = f"Organization/{self.run_id}-no-such-organization"
            else:
                refs[role] = refs["source"]
        return refs

    def _ensure_org(self, role: str, ref: str) -> None:
        client = self.clients[role]
        if client.get(ref).status == 200:
            return
        org = fx.organization(self.run_id, role) | {"id": ref.split("/", 1)[1]}
        resp = client.put(ref, org)
        if resp.status not in (200, 201):
            raise Prerequisite(f"{ref} (the {role}'s organization) does not exist and could "
                               f"not be created: {describe(resp)}")
        self.created.append((role, ref))

    def patient(self) -> dict[str, Any]:
        return self._once("patient", lambda: self.create(
            "source", fx.patient(self.run_id), "the Patient"))

    def consent(self) -> dict[str, Any]:
        def build() -> dict[str, Any]:
            pat = ref_of(self.patient())
            doc = self.create("source", fx.document(self.run_id, pat), "the DocumentReference")
            return self.create("source", fx.consent(self.run_id, pat, self.orgs()["source"],
                                                    ref_of(doc)), "the Consent")
        return self._once("consent", build)

    def document(self) -> dict[str, Any]:
        consent = self.consent()
        return self.read("source", consent["sourceReference"]["reference"])

    def new_referral(self, owner: str | None = "recipient", requester: str = "source",
                     status: str = "requested") -> tuple[dict[str, Any], dict[str, Any]]:
        """A fresh ServiceRequest and its referral Task (owner: a role, or None for open)."""
        orgs = self.orgs()
        n = self.next_n()
        pat = ref_of(self.patient())
        performer = orgs[owner] if owner else orgs["recipient"]
        sr = self.create(requester, fx.service_request(
            self.run_id, n, pat, orgs[requester], performer, ref_of(self.consent())),
            "the ServiceRequest")
        task = self.create(requester, fx.referral_task(
            self.run_id, n, ref_of(sr), pat, orgs[requester], orgs[owner] if owner else None,
            status), "the referral Task")
        return sr, task

    def referral(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The run's main open referral (requested, owned by the recipient)."""
        return self._once("referral", lambda: self.new_referral())

    def procedure_for(self, role: str, sr: dict[str, Any]) -> dict[str, Any]:
        return self.create(role, fx.procedure(self.run_id, self.next_n(), ref_of(self.patient()),
                                              ref_of(sr), self.orgs()[role]), "the Procedure")

    def completed(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """A referral the recipient accepted, started and completed with a Procedure."""
        def build() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
            sr, task = self.new_referral()
            task = self.advance("recipient", task, "accepted")
            task = self.advance("recipient", task, "in-progress")
            proc = self.procedure_for("recipient", sr)
            task = self.advance("recipient", task, "completed",
                                output=[fx.resulting_activity(ref_of(proc))])
            return sr, task, proc
        return self._once("completed", build)

    # clean-up ----------------------------------------------------------------------------
    def cleanup(self, only: tuple[str, ...] = ()) -> list[str]:
        """Delete what the run created (newest first), or only resources of the types in
        `only`; Tasks the server keeps are marked entered-in-error so they leave work queues.
        Returns one line per action."""
        lines: list[str] = []
        for role, ref in reversed(self.created):
            if only and ref.split("/", 1)[0] not in only:
                continue
            client = self.clients[role]
            resp = client.delete(ref)
            if resp.status in (200, 202, 204, 410):
                lines.append(f"deleted {ref}")
                continue
            if ref.startswith("Task/"):
                current = client.get(ref).json() or {}
                if isinstance(current, dict) and current.get("status") not in (
                        None, "entered-in-error"):
                    marked = self.update_task(role, current, status="entered-in-error",
                                              statusReason={"text": "conformance kit clean-up"})
                    lines.append(f"kept {ref} ({describe(resp)}); marked entered-in-error: "
                                 f"{marked.status}")
                    continue
            lines.append(f"kept {ref}: {describe(resp)}")
        return lines
