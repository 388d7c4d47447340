"""The filters of a referral list (the clinic's tracker, the provider's queue): read from the
query string, checked, and turned into Task search parameters; and the next-page links a
list follows (only the search parameters that list uses)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar, Self
from urllib.parse import parse_qsl, urlencode, urlsplit

from flask import request

from fhir_server.web import words

TEXT_LIMIT = 100  # characters kept of a free-text filter


@dataclass
class ReferralFilters:
    """Status, priority, patient and received-date filters; subclasses add text filters
    (any further `str` field is read as free text)."""

    STATUSES: ClassVar[tuple[str, ...]] = ()
    status: str = ""
    priority: str = ""
    patient: str = ""
    since: str = ""
    until: str = ""

    @classmethod
    def from_args(cls) -> Self:
        """The filters in the request's query string; unknown or malformed values are
        dropped (a list is never refused for its filters)."""
        args = request.args
        values = {f.name: args.get(f.name, "").strip()[:TEXT_LIMIT] for f in fields(cls)}
        values["status"] = values["status"] if values["status"] in cls.STATUSES else ""
        values["priority"] = values["priority"] if values["priority"] in words.PRIORITY \
            else ""
        values["since"], values["until"] = day(values["since"]), day(values["until"])
        return cls(**values)

    @property
    def active(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))

    def query(self) -> str:
        return urlencode({f.name: getattr(self, f.name) for f in fields(self)
                          if getattr(self, f.name)})

    def common_params(self, patient_param: str) -> list[tuple[str, str]]:
        """Search parameters for status, priority, patient (through `patient_param`) and
        the received dates."""
        params = []
        if self.status:
            params.append(("status", self.status))
        if self.priority:
            params.append(("priority", self.priority))
        if self.patient:
            params.append((patient_param, self.patient))
        if self.since:
            params.append(("authored-on", f"ge{self.since}"))
        if self.until:
            params.append(("authored-on", f"le{self.until}"))
        return params


def day(value: str) -> str:
    """`value` when it is a date (YYYY-MM-DD), else ""."""
    return value if len(value) == 10 and words.parse_time(value) is not None else ""


def page_params(page: str, allowed: frozenset[str]) -> list[tuple[str, str]] | None:
    """The search parameters of a next-page link, when it uses only `allowed` ones."""
    pairs = parse_qsl(urlsplit(page).query, keep_blank_values=True)
    if not pairs or any(k not in allowed for k, _ in pairs):
        return None
    return pairs
