"""SMART v1/v2 scope parsing, negotiation and the interaction mapping of SMART App Launch 2.2.

Grammar (v2): ``(patient|user|system)/(Type|*).[c][r][u][d][s][?param=value(&param=value)*]``
with the letters a non-empty subset of ``cruds``. Out-of-order letters (``rsu``, as written
in our own issue text) are accepted and normalised to ``rus``; repeated letters are rejected.
v1 suffixes map as ``.read -> rs``, ``.write -> cud``, ``.* -> cruds``. Scopes combine as
a union; write does not imply read. Granular query values are kept verbatim (never
URL-decoded: they contain ``|``, ``:`` and ``/``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

LETTERS = "cruds"
V1_LETTERS = {"read": "rs", "write": "cud", "*": "cruds"}
LETTERS_V1 = {v: k for k, v in V1_LETTERS.items()}

_V2 = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]+)\.([cruds]{1,5})(\?\S+)?$")
_V1 = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]+)\.(read|write|\*)$")

#: FHIR interaction name -> SMART permission letter (SMART App Launch 2.2 §scopes table).
INTERACTION_LETTER: dict[str, str] = {
    "create": "c",
    "read": "r",
    "vread": "r",
    "history-instance": "r",
    "update": "u",
    "patch": "u",
    "delete": "d",
    "search-type": "s",
    "history-type": "s",
    "search-system": "s",
    "history-system": "s",
}

#: Non-resource scopes the server understands.
CONTEXT_SCOPES = frozenset(
    {
        "openid",
        "fhirUser",
        "profile",
        "launch",
        "launch/patient",
        "launch/encounter",
        "offline_access",
        "online_access",
    }
)


@dataclass(frozen=True)
class Scope:
    """One parsed resource scope."""

    context: str  # patient | user | system
    res_type: str  # a resource type or "*"
    letters: str  # in-order subset of "cruds"
    params: tuple[tuple[str, str], ...] = ()  # granular ?k=v pairs (AND), verbatim
    v1: bool = False

    def covers_type(self, res_type: str | None) -> bool:
        """True when the scope applies to `res_type` (None: any type, for system-level calls)."""
        return self.res_type == "*" or res_type is None or self.res_type == res_type

    def render(self) -> str:
        """The scope string (v1 form when it was requested as v1 and still has v1 letters)."""
        head = f"{self.context}/{self.res_type}."
        if self.v1 and not self.params and self.letters in LETTERS_V1:
            return head + LETTERS_V1[self.letters]
        query = "&".join(f"{k}={v}" for k, v in self.params)
        return head + self.letters + (f"?{query}" if query else "")


@dataclass(frozen=True)
class ScopeSet:
    """A parsed scope string: resource scopes plus the other (context) scopes."""

    resource: tuple[Scope, ...] = ()
    other: frozenset[str] = frozenset()
    unknown: tuple[str, ...] = ()

    def render(self) -> str:
        """Space-separated scope string: context scopes first, then resource scopes."""
        ordered = sorted(self.other, key=_context_order) + [s.render() for s in self.resource]
        return " ".join(ordered)

    def has(self, name: str) -> bool:
        return name in self.other

    def contexts(self) -> set[str]:
        """The scope contexts present (patient/user/system)."""
        return {s.context for s in self.resource}


def _context_order(name: str) -> tuple[int, str]:
    order = ["launch", "launch/patient", "launch/encounter", "openid", "fhirUser", "profile"]
    return (order.index(name) if name in order else len(order), name)


def parse_scope(raw: str) -> Scope | None:
    """Parse one resource scope; None if `raw` is not a (valid) resource scope."""
    m = _V1.match(raw)
    if m:
        return Scope(m.group(1), m.group(2), V1_LETTERS[m.group(3)], (), True)
    m = _V2.match(raw)
    if not m or len(set(m.group(3))) != len(m.group(3)):
        return None
    letters = "".join(ch for ch in LETTERS if ch in m.group(3))  # canonical order
    params: list[tuple[str, str]] = []
    if m.group(4):
        for part in m.group(4)[1:].split("&"):
            name, sep, value = part.partition("=")
            if not name or not sep or not value:
                return None
            params.append((name, value))
    return Scope(m.group(1), m.group(2), letters, tuple(params))


@lru_cache(maxsize=4096)
def parse_scopes(text: str | None) -> ScopeSet:
    """Parse a space-separated scope string (cached: token validation calls this per request)."""
    resource: list[Scope] = []
    other: set[str] = set()
    unknown: list[str] = []
    for raw in (text or "").split():
        if raw in CONTEXT_SCOPES or raw.startswith("launch/"):
            other.add(raw)
            continue
        scope = parse_scope(raw)
        if scope is None:
            unknown.append(raw)
        elif scope not in resource:
            resource.append(scope)
    return ScopeSet(tuple(resource), frozenset(other), tuple(unknown))


def letter_for(interaction: str) -> str:
    """The SMART letter for a FHIR interaction name (KeyError for unknown interactions)."""
    return INTERACTION_LETTER[interaction]


def matching_scopes(
    scopes: ScopeSet | tuple[Scope, ...], interaction: str, res_type: str | None
) -> list[Scope]:
    """Every scope that grants `interaction` on `res_type` (ignoring granular filters)."""
    letter = letter_for(interaction)
    items = scopes.resource if isinstance(scopes, ScopeSet) else scopes
    return [s for s in items if letter in s.letters and s.covers_type(res_type)]


def permits(
    scopes: ScopeSet | tuple[Scope, ...],
    interaction: str,
    res_type: str | None,
    resource: dict | None = None,
) -> bool:
    """Does the union of `scopes` allow `interaction` on `res_type` (and on `resource`)?

    Type-level only when `resource` is None: a granular scope counts (the search is then
    narrowed by `policy.restrict_for`). With a resource, a granular scope only counts when
    the resource matches all of its parameters (see `granular.matches`).
    """
    from fhir_server.auth.granular import matches  # local: granular needs fhirpathpy

    for scope in matching_scopes(scopes, interaction, res_type):
        if not scope.params or resource is None:
            return True
        if matches(resource, scope.params):
            return True
    return False


def negotiate(requested: ScopeSet, allowed: ScopeSet) -> ScopeSet:
    """Clamp requested scopes to a client's registered maximum (intersection, never widening).

    A requested scope is intersected with every allowed scope of the same context covering
    its type: letters are intersected and granular parameters are AND-ed; results for the
    same context, type and parameters are merged (shortest form). Context scopes are kept
    only if registered. Unknown scopes are dropped.
    """
    merged: dict[tuple, tuple[str, bool]] = {}  # (context, type, params) -> (letters, v1)
    for req in requested.resource:
        for allow in allowed.resource:
            if allow.context != req.context:
                continue
            if allow.res_type != "*" and req.res_type not in ("*", allow.res_type):
                continue
            res_type = allow.res_type if req.res_type == "*" else req.res_type
            letters = {ch for ch in LETTERS if ch in req.letters and ch in allow.letters}
            if not letters:
                continue
            key = (req.context, res_type, tuple(dict.fromkeys(req.params + allow.params)))
            before, _ = merged.get(key, ("", req.v1))
            union = "".join(ch for ch in LETTERS if ch in letters or ch in before)
            merged[key] = (union, req.v1)
    granted = [Scope(c, t, letters, p, v1) for (c, t, p), (letters, v1) in merged.items()]
    other = frozenset(s for s in requested.other if s in allowed.other)
    return ScopeSet(tuple(granted), other)


def is_subset(requested: ScopeSet, granted: ScopeSet) -> bool:
    """True when every permission of `requested` is covered by the union of `granted`
    (used at refresh: a refresh may narrow the grant, never widen it)."""
    if not requested.other <= granted.other or requested.unknown:
        return False
    for req in requested.resource:
        for letter in req.letters:
            if not any(
                g.context == req.context
                and g.res_type in ("*", req.res_type)
                and letter in g.letters
                and set(g.params) <= set(req.params)
                for g in granted.resource
            ):
                return False
    return True


#: What a patient account may be granted besides `patient/` scopes.
PATIENT_ACCOUNT_SCOPES = frozenset({"openid", "fhirUser", "profile", "online_access",
                                    "offline_access", "launch/patient"})


def patient_account_scope(scope: ScopeSet) -> ScopeSet:
    """The part of `scope` a patient account may hold: its `patient/` scopes (bound to its
    own Patient) and sign-in scopes. Never `user/` or `system/` scopes: a patient has no
    organization, so those would not be narrowed to anything."""
    return ScopeSet(tuple(s for s in scope.resource if s.context == "patient"),
                    frozenset(scope.other & PATIENT_ACCOUNT_SCOPES))
