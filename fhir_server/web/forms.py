"""Forms: CSRF values, idempotency keys, keeping typed values across a new sign-in, and
placing a server's OperationOutcome issues next to the fields they name.

Conventions every app follows (see README.md):
* A form posts to the URL of the page that shows it, so that after a new sign-in the user
  is sent back to that page with the values restored.
* Every form carries `csrf` (checked before any handler runs).
* A form that creates something carries `idempotency_key` (`new_key()`), which becomes the
  identifier of what it creates (`key_identifier`) and the `ifNoneExist` condition of its
  create, so a double submit, a retry or a back-button resubmit creates it once.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from fhir_server.web.api import ApiError, IssueText

KEY_SYSTEM = "urn:ietf:rfc:3986"
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
NOT_KEPT = frozenset({"csrf"})
MAX_KEPT_CHARS = 2000


def new_key() -> str:
    """A fresh idempotency key (a random UUID)."""
    return str(uuid.uuid4())


def valid_key(value: str | None) -> str | None:
    """The key when it is a well-formed random UUID, else None."""
    value = (value or "").strip().lower()
    return value if _UUID.match(value) else None


def key_identifier(key: str) -> dict[str, str]:
    """The Identifier a created resource carries for its idempotency key."""
    return {"system": KEY_SYSTEM, "value": f"urn:uuid:{key}"}


def key_condition(key: str) -> str:
    """The `ifNoneExist` search that finds what this key already created."""
    return f"identifier={KEY_SYSTEM}|urn:uuid:{key}"


def kept_values(form: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """The typed values of a form to keep across a sign-in (no CSRF value, bounded size)."""
    items = form.items(multi=True) if hasattr(form, "getlist") else (  # type: ignore[union-attr]
        form.items() if isinstance(form, Mapping) else form)
    kept: dict[str, list[str]] = {}
    for name, value in items:
        if name in NOT_KEPT:
            continue
        kept.setdefault(name, []).append(str(value)[:MAX_KEPT_CHARS])
    return kept


@dataclass
class FormState:
    """What a form page shows: the values (typed or restored) and the errors per field."""

    values: dict[str, list[str]] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)
    general: list[str] = field(default_factory=list)  # errors not tied to one field
    restored: bool = False

    def value(self, name: str, default: str = "") -> str:
        found = self.values.get(name)
        return found[0] if found else default

    def all(self, name: str) -> list[str]:
        return self.values.get(name, [])

    def add(self, name: str | None, message: str) -> None:
        if name:
            self.errors.setdefault(name, []).append(message)
        else:
            self.general.append(message)

    @property
    def has_errors(self) -> bool:
        return bool(self.errors or self.general)

    @classmethod
    def posted(cls, form: Mapping[str, str]) -> FormState:
        """The values of a submitted form (every value of each field, no CSRF value)."""
        return cls(values={k: form.getlist(k) for k in form  # type: ignore[attr-defined]
                           if k not in NOT_KEPT})


@dataclass(frozen=True)
class FieldMap:
    """Which form field an issue's FHIRPath expression points at: the first rule whose
    pattern matches (searched anywhere in the expression) wins."""

    rules: tuple[tuple[str, str], ...]

    def field_for(self, expression: str) -> str | None:
        for pattern, name in self.rules:
            if re.search(pattern, expression):
                return name
        return None

    def place(self, state: FormState, issues: list[IssueText]) -> None:
        """Put each error/fatal issue next to its field (or among the general errors)."""
        shown = [i for i in issues if i.severity in ("error", "fatal")] or issues
        for issue in shown:
            names = {self.field_for(e) for e in issue.expressions} - {None}
            if names:
                for name in sorted(names):  # type: ignore[type-var]
                    state.add(name, issue.text)
            else:
                state.add(None, issue.text)

    def place_error(self, state: FormState, error: ApiError) -> None:
        self.place(state, error.issues)
