"""The one access policy: every interaction asks it before touching data.

Two questions:

* `check_interaction(ctx, interaction, res_type, resource=None)`: may the caller do this?
  - No granted scope has the SMART letter for `interaction` on `res_type` (smart.md §1.6):
    **403** `forbidden` with `WWW-Authenticate: Bearer error="insufficient_scope"`. This
    reveals nothing about stored data.
  - With `resource` (the stored resource for read/vread/history-instance/update/patch/
    delete, or the new resource for create/update): the resource must also satisfy one
    covering scope's context (patient/ → in the Patient compartment of `ctx.patient`) and
    granular filter. Failure on an existing resource → **404** (no existence leak);
    failure on a create → 403.
  - The token's own `fhirUser` resource is always readable (SMART OIDC).
  - Batch/transaction: call once per entry. Conditional create/update/delete: also call
    with "search-type" for the condition.
* `restrict_for(ctx, res_type)`: how must a search (and `_include`, `_revinclude`, chains,
  `_has`, history, operations, notifications) over `res_type` be narrowed? Returns a
  `SearchRestriction` that storage turns into SQL *before* running the query.

The organization part (`referral_compartment.py`: what the organization wrote, its
patients, and the referral compartment) applies to every context with an `organization`
that is not an administrator or SYSTEM.
"""

from __future__ import annotations

from dataclasses import dataclass

from fhir_server.auth.context import AccessContext
from fhir_server.auth.granular import compartment_params, in_patient_compartment, matches
from fhir_server.auth.referral_compartment import SHARED_TYPES, Rule, organization_rules
from fhir_server.auth.scopes import INTERACTION_LETTER, Scope, matching_scopes
from fhir_server.errors import FhirError, not_found

EXISTING_RESOURCE_INTERACTIONS = frozenset(
    {"read", "vread", "history-instance", "update", "patch", "delete"}
)
WRITE_INTERACTIONS = frozenset({"create", "update", "patch", "delete"})


def insufficient_scope(interaction: str, res_type: str | None) -> FhirError:
    """The 403 raised when no granted scope covers an interaction."""
    target = res_type or "the system"
    letter = INTERACTION_LETTER.get(interaction, "?")
    return FhirError(
        403,
        "forbidden",
        f"insufficient_scope: no granted scope allows '{interaction}' ({letter}) on {target}",
        headers={"WWW-Authenticate": 'Bearer error="insufficient_scope"'},
    )


def _scope_allows_resource(ctx: AccessContext, scope: Scope, resource: dict, write: bool) -> bool:
    if scope.context == "patient":
        if not ctx.patient:
            return False
        res_type = resource.get("resourceType", "")
        if compartment_params(res_type) or res_type == "Patient":
            if not in_patient_compartment(resource, ctx.patient):
                return False
        elif write:  # shared (non-patient) resources are read-only under patient/ scopes
            return False
    return not scope.params or matches(resource, scope.params)


def _usable(ctx: AccessContext, scopes: list[Scope]) -> list[Scope]:
    """patient/ scopes only count when a patient is in context."""
    return [s for s in scopes if s.context != "patient" or ctx.patient]


def check_interaction(
    ctx: AccessContext,
    interaction: str,
    res_type: str | None,
    resource: dict | None = None,
    *,
    stored: bool | None = None,
) -> None:
    """Raise FhirError (403, or 404 for stored resources) unless `ctx` may do this.

    `stored` says whether `resource` is the stored resource (default: True for read,
    vread, history-instance, update, patch and delete) or new content (False; default for
    create). For update/patch call twice: with the stored resource, then with the new
    content and `stored=False` (moving a resource out of the caller's reach gives 403).
    """
    if ctx.unrestricted:
        return
    if (
        resource is not None
        and interaction in ("read", "vread")
        and ctx.fhir_user
        and f"{resource.get('resourceType')}/{resource.get('id')}" == ctx.fhir_user
    ):
        return
    scopes = _usable(ctx, matching_scopes(ctx.scopes, interaction, res_type))
    if not scopes:
        raise insufficient_scope(interaction, res_type)
    if resource is None:
        return
    write = interaction in WRITE_INTERACTIONS
    if any(_scope_allows_resource(ctx, s, resource, write) for s in scopes):
        return
    if stored is None:
        stored = interaction in EXISTING_RESOURCE_INTERACTIONS
    if stored:
        raise not_found(resource.get("resourceType", res_type or "?"), resource.get("id", "?"))
    raise FhirError(
        403,
        "forbidden",
        "insufficient_scope: the resource is outside the granted scopes' patient context "
        "or granular filter",
        headers={"WWW-Authenticate": 'Bearer error="insufficient_scope"'},
    )


@dataclass(frozen=True)
class Alternative:
    """One OR-branch of scope narrowing: all `params` (AND) and, if set, the patient."""

    params: tuple[tuple[str, str], ...] = ()
    patient: str | None = None  # restrict to the compartment of Patient/<patient>
    compartment_params: tuple[str, ...] = ()  # reference params defining that compartment


@dataclass(frozen=True)
class SearchRestriction:
    """How storage must narrow a search over `res_type` (applied in SQL, before paging).

    - `allowed` False: the type is not visible at all → the search (or include) is empty.
    - `alternatives` None: no scope narrowing. Otherwise the rows must match at least one
      Alternative (OR); each Alternative is an AND of search parameters (`params`, in
      search syntax, applied like the client's own parameters) plus, with `patient`,
      membership in that Patient's compartment (`compartment_params` reference params,
      any of them, equal to Patient/<patient>; for Patient itself, `_id`).
    - `organization` set: additionally the row must be in that organization's referral
      compartment, defined by `rules` (see referral_compartment.py). `shared` True means the
      type is directory data, visible without compartment rules.
    """

    res_type: str
    allowed: bool = True
    alternatives: tuple[Alternative, ...] | None = None
    organization: str | None = None
    rules: tuple[Rule, ...] = ()
    shared: bool = False

    @property
    def unrestricted(self) -> bool:
        return self.allowed and self.alternatives is None and self.organization is None


def restrict_for(ctx: AccessContext, res_type: str, interaction: str = "search-type") -> (
    SearchRestriction
):
    """The narrowing for reading `res_type` rows through `interaction` (default search).

    Never raises: a type without a covering scope gives `allowed=False` (used for
    `_include`/`_revinclude` targets and system-level searches, which drop such types).
    Call `check_interaction` first for the type the client actually searches.
    """
    if ctx.unrestricted:
        return SearchRestriction(res_type)
    scopes = _usable(ctx, matching_scopes(ctx.scopes, interaction, res_type))
    if not scopes:
        return SearchRestriction(res_type, allowed=False)
    alternatives: list[Alternative] | None = []
    for scope in scopes:
        patient = None
        params: tuple[str, ...] = ()
        if scope.context == "patient":
            params = tuple(compartment_params(res_type))
            if params or res_type == "Patient":
                patient = ctx.patient
        if patient is None and not scope.params:
            alternatives = None  # one unconstrained scope: no narrowing by scopes
            break
        alternatives.append(Alternative(scope.params, patient, params))
    organization = None if ctx.is_admin else ctx.organization
    if organization is None:
        return SearchRestriction(res_type, True, _tuple(alternatives))
    if res_type in SHARED_TYPES:
        return SearchRestriction(res_type, True, _tuple(alternatives), organization, (), True)
    rules = organization_rules(res_type)
    if not rules:
        return SearchRestriction(res_type, allowed=False, organization=organization)
    return SearchRestriction(res_type, True, _tuple(alternatives), organization, rules)


def _tuple(items: list[Alternative] | None) -> tuple[Alternative, ...] | None:
    return None if items is None else tuple(items)


def searchable_types(ctx: AccessContext, candidates: list[str]) -> list[str]:
    """The types of `candidates` a system-level search/history may return for `ctx`."""
    return [t for t in candidates if restrict_for(ctx, t, "search-system").allowed]


def require_admin(ctx: AccessContext) -> None:
    """AuditEvent queries and other administration: administrators (or SYSTEM) only."""
    if not (ctx.is_admin or ctx.is_system):
        raise FhirError(
            403, "forbidden", "Only administrators may read the audit log",
            headers={"WWW-Authenticate": 'Bearer error="insufficient_scope"'},
        )
