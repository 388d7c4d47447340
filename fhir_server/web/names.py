"""Names for references: a page collects the references it shows, reads them all in one batch
request, and prints names (an Organization is its name, a Practitioner their name) instead
of ids. What the user may not read stays "(not visible to you)"."""

from __future__ import annotations

import re
from typing import Any

from fhir_server.web.api import ApiError, FhirApi
from fhir_server.web.words import display_name

_REF = re.compile(r"^[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")
MAX_BATCH = 100


class Names:
    """Display names for `Type/id` references, read through the API in one batch."""

    def __init__(self, api: FhirApi) -> None:
        self.api = api
        self.resources: dict[str, dict] = {}
        self._wanted: list[str] = []
        self._hidden: set[str] = set()

    def know(self, resource: dict | None) -> None:
        """Remember a resource the page already has (no read needed)."""
        if resource and resource.get("resourceType") and resource.get("id"):
            self.resources[f"{resource['resourceType']}/{resource['id']}"] = resource

    def want(self, ref: Any) -> None:
        """Ask for a reference (a string or a Reference dict) to be resolved."""
        text = ref.get("reference") if isinstance(ref, dict) else ref
        if isinstance(text, str) and _REF.match(text) and text not in self.resources \
                and text not in self._wanted:
            self._wanted.append(text)

    def fetch(self) -> None:
        """Read every wanted reference (one batch request)."""
        wanted, self._wanted = self._wanted[:MAX_BATCH], self._wanted[MAX_BATCH:]
        for ref, answer in zip(wanted, self.api.batch(wanted), strict=True):
            if isinstance(answer, ApiError):
                self._hidden.add(ref)
            else:
                self.resources[ref] = answer

    def get(self, ref: Any) -> dict | None:
        text = ref.get("reference") if isinstance(ref, dict) else ref
        return self.resources.get(text) if isinstance(text, str) else None

    def name(self, ref: Any, fallback: str = "") -> str:
        """The display name of a reference."""
        text = ref.get("reference") if isinstance(ref, dict) else ref
        display = ref.get("display") if isinstance(ref, dict) else None
        if isinstance(text, str) and text in self.resources:
            resource = self.resources[text]
            if resource.get("resourceType") == "PractitionerRole":
                return self._role(resource)
            return display_name(resource)
        if display:
            return str(display)
        if isinstance(text, str) and text in self._hidden:
            return fallback or "(not visible to you)"
        return fallback or "(unknown)"

    def _role(self, role: dict) -> str:
        who = self.name(role.get("practitioner"), "")
        org = self.name(role.get("organization"), "")
        parts = [p for p in (who, org) if p and not p.startswith("(")]
        return ", ".join(parts) or display_name(role)
