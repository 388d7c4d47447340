"""What an interaction needs besides its arguments: services and the caller."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fhir_server.budget import RequestBudget
from fhir_server.config import Settings
from fhir_server.interactions.operations import OperationRegistry
from fhir_server.interactions.phases import WritePhases
from fhir_server.search.parser import SearchLimits
from fhir_server.storage.db import Database


@dataclass
class CapabilityExtras:
    """What features add to the CapabilityStatement (filled in by `wiring`)."""

    supported_profiles: dict[str, set[str]] = field(default_factory=dict)
    instantiates: set[str] = field(default_factory=set)
    security: Callable[[Any], dict] | None = None
    resource_extensions: dict[str, list[Callable[[Any], list[dict]]]] = field(
        default_factory=dict)
    extensions: list[Callable[[Any], dict]] = field(default_factory=list)


@dataclass
class Services:
    """Application-wide services shared by every request."""

    settings: Settings
    db: Database
    # the named write phases every write path runs (prepare, check, after-write)
    phases: WritePhases = field(default_factory=WritePhases)
    # the $operations the features registered (dispatched by the router, listed in metadata)
    operations: OperationRegistry = field(default_factory=OperationRegistry)
    # (call, Bundle) -> Result: batch/transaction processing (bundles.process_bundle, set by
    # wiring; its entries are dispatched through the route table)
    bundles: Callable[[Any, Any], Any] | None = None
    capability_extras: CapabilityExtras = field(default_factory=CapabilityExtras)
    # callables returning definitional resources (with ids) that `seed` stores
    seed_providers: list[Callable[[], list[dict]]] = field(default_factory=list)
    # (resource, explicit profile URL or None) -> issues; set by wiring to the profile validator
    profile_validator: Callable[[dict, str | None], list] | None = None

    # (subscription owner, resource[, conn]) -> may the owner read it (the writer's connection
    # sees the resource being written); None: no access layer
    readable_by: Callable[..., bool] | None = None
    # call -> predicate over subscription states the caller may see; None: all
    subscription_filter: Callable[[Any], Callable[[Any], bool] | None] | None = None
    # the batched writer of read AuditEvents (fhir_server.auth.audit_store.AuditQueue)
    audit_queue: Any = None

    def subscription_visible(self, call: Any) -> Callable[[Any], bool] | None:
        return self.subscription_filter(call) if self.subscription_filter else None

    def validate_profiles(self, resource: dict, profile: str | None) -> list:
        """Profile issues for `resource` (its meta.profile claims, or `profile`)."""
        if self.profile_validator is None:
            return []
        return self.profile_validator(resource, profile)


def author_org(access: Any) -> str | None:
    """The organization a caller writes for: None for the server's own jobs and for
    development without identities."""
    if access is None or getattr(access, "is_system", False) or getattr(
            access, "auth_disabled", False):
        return None
    return getattr(access, "organization", None)


@dataclass
class Call:
    """One FHIR call: the services, the caller's access context and the request's base URL."""

    services: Services
    base_url: str
    access: Any = None  # fhir_server.auth.context.AccessContext when auth is on
    prefer_return: str = "representation"
    strict_handling: bool = False
    # The If-Match version of a state-changing instance operation (`$redirect`); writes
    # carry theirs on the WriteEvent.
    if_match_version: int | None = None
    # Denial AuditEvents to store once the call's transaction is over (access.flush_audit).
    pending_audit: list[dict] = field(default_factory=list)
    # Values cached for the length of this call (the access layer's organization lookups).
    hook_state: dict[Any, Any] = field(default_factory=dict)
    # A non-FHIR format an operation may serve (e.g. text/csv), from _format / Accept.
    requested_raw_format: str | None = None
    # The request's cost budget (shared by a Bundle's entries); made from the settings
    # when first used unless the REST layer made it at the request's start.
    request_budget: RequestBudget | None = None
    # Set by the REST layer for a request with an idempotency key: stores the response of
    # `result` in the write transaction `conn` (see remember_response).
    response_recorder: Callable[[Any, Any], None] | None = None

    def remember_response(self, conn: Any, result: Any) -> None:
        """Called by a write interaction just before it commits: the response to this
        request is stored with its writes, so a retry with the same key gets it back."""
        if self.response_recorder is not None:
            self.response_recorder(conn, result)

    @property
    def budget(self) -> RequestBudget:
        if self.request_budget is None:
            self.request_budget = new_budget(self.settings)
        return self.request_budget

    @property
    def search_limits(self) -> SearchLimits:
        s = self.settings
        return SearchLimits(max_chain_depth=s.max_chain_depth, max_values=s.max_search_values,
                            max_count=s.max_page_size)
    # Inside a transaction: the (type, id) of every resource it creates or updates, which
    # its entries may reference in any order (reference_check).
    transaction_targets: frozenset[tuple[str, str]] = frozenset()
    # Base-validation warnings of a body about to be written, by id() of the body.
    validation_warnings: dict[int, list] = field(default_factory=dict)

    @property
    def db(self) -> Database:
        return self.services.db

    def write(self):  # type: ignore[no-untyped-def]
        """This call's write transaction. Resources it creates are authored by the caller's
        organization (`resources.author_org`), which the access policy lets it see."""
        return self.services.db.write(author_org=author_org(self.access))

    @property
    def settings(self) -> Settings:
        return self.services.settings


def new_budget(settings: Settings) -> RequestBudget:
    """A fresh request budget from the settings."""
    return RequestBudget(max_rows=settings.max_rows_read, max_included=settings.max_included,
                         seconds=settings.request_seconds)
