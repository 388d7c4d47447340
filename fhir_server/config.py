"""All configuration, read once from environment variables with safe defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw not in (None, "") else default


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw not in (None, "") else default


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    return raw.strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    """Server settings. Build with `Settings.from_env()`; tests pass overrides explicitly."""

    database_url: str = "sqlite:///var/fhir.sqlite3"
    base_url: str = ""  # empty: derived from each request's Host
    max_body_bytes: int = 10 * 1024 * 1024
    max_bundle_entries: int = 5000
    default_page_size: int = 20
    max_page_size: int = 1000
    require_if_match_for_tasks: bool = True
    allow_plain_http_full_resource: bool = False  # local development only
    auth_mode: str = "on"  # "on" or "off" (local development only)
    required_profiles: str = "default"  # "default" | "none" | JSON {type: [profile URLs]}
    strict_profiles: bool = False  # an unknown claimed profile is an error, not a warning
    # "Organization/x": who the server acts as when it is the coordination platform ("" = off)
    platform_organization: str = ""
    # e.g. "stat=1h,urgent=1bd,routine=3bd,accepted=7d,in-progress=14d" ("" = defaults)
    stalled_policy: str = ""
    # Input limits (hostile input gets a 4xx OperationOutcome, never a crash)
    max_json_depth: int = 64  # nesting of objects and arrays in a JSON or XML body
    max_number_digits: int = 32  # significant digits of a number in a body
    max_number_exponent: int = 300  # |decimal exponent|: every number stays a finite double
    max_chain_depth: int = 4  # chained parameters and _has nested in one search parameter
    max_search_values: int = 1000  # search parameters plus OR-ed values in one search
    # Cost budget of one request (a batch's entries share it)
    max_rows_read: int = 5000  # resources read: search matches, includes, reads, history
    max_included: int = 1000  # resources added by _include / _revinclude
    request_seconds: float = 30.0  # time for the request's database work
    # Idempotent retries: Idempotency-Key / X-Request-Id remembered this long
    idempotency_seconds: int = 86400
    # sign-in lockout: this many failures per account (4x per address) lock for this long
    login_max_failures: int = 5
    login_lockout_seconds: int = 900
    # AuditEvents older than this are removed by the worker's sweep (0: kept forever)
    audit_retention_days: int = 2190
    # record reads of patient data as AuditEvents (off only to measure what it costs)
    audit_reads: bool = True
    # equity breakdowns show counts of 1 to N-1 as "<N" (11: a common public-health rule;
    # 0 or 1 shows every count)
    small_cell_threshold: int = 11
    # weeks after care starts that the follow-up PHQ-9/GAD-7 request is due (0 = none; 4-12)
    follow_up_screening_weeks: int = 6
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Settings from FHIR_SERVER_* / DATABASE_URL environment variables."""
        values: dict[str, object] = {
            "database_url": os.environ.get("DATABASE_URL") or _default_sqlite_url(),
            "base_url": os.environ.get("FHIR_SERVER_BASE_URL", ""),
            "max_body_bytes": _env_int("FHIR_SERVER_MAX_BODY_BYTES", 10 * 1024 * 1024),
            "max_bundle_entries": _env_int("FHIR_SERVER_MAX_BUNDLE_ENTRIES", 5000),
            "default_page_size": _env_int("FHIR_SERVER_DEFAULT_PAGE_SIZE", 20),
            "max_page_size": _env_int("FHIR_SERVER_MAX_PAGE_SIZE", 1000),
            "require_if_match_for_tasks": _env_bool("FHIR_SERVER_REQUIRE_IF_MATCH_TASKS", True),
            "auth_mode": os.environ.get("FHIR_SERVER_AUTH", "on"),
            "required_profiles": os.environ.get("FHIR_SERVER_REQUIRED_PROFILES", "default"),
            "strict_profiles": _env_bool("FHIR_SERVER_STRICT_PROFILES", False),
            "platform_organization": os.environ.get("FHIR_SERVER_PLATFORM_ORGANIZATION", ""),
            "stalled_policy": os.environ.get("FHIR_SERVER_STALLED_POLICY", ""),
            "login_max_failures": _env_int("FHIR_SERVER_LOGIN_MAX_FAILURES", 5),
            "login_lockout_seconds": _env_int("FHIR_SERVER_LOGIN_LOCKOUT_SECONDS", 900),
            "audit_retention_days": _env_int("FHIR_SERVER_AUDIT_RETENTION_DAYS", 2190),
            "audit_reads": _env_bool("FHIR_SERVER_AUDIT_READS", True),
            "small_cell_threshold": _env_int("FHIR_SERVER_SMALL_CELL_THRESHOLD", 11),
            "follow_up_screening_weeks": _env_int("FHIR_SERVER_FOLLOW_UP_SCREENING_WEEKS", 6),
            "allow_plain_http_full_resource": _env_bool(
                "FHIR_SERVER_ALLOW_PLAIN_HTTP_FULL_RESOURCE", False),
        }
        values.update(_limit_settings())
        stale = os.environ.get("FHIR_SERVER_CAPACITY_STALE_DAYS")
        if stale:
            values["extra"] = {"capacity_stale_days": stale}
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


def _limit_settings() -> dict[str, object]:
    """Input limits and the per-request cost budget (README: Limits and cost budget)."""
    return {
        "max_json_depth": _env_int("FHIR_SERVER_MAX_JSON_DEPTH", 64),
        "max_number_digits": _env_int("FHIR_SERVER_MAX_NUMBER_DIGITS", 32),
        "max_number_exponent": _env_int("FHIR_SERVER_MAX_NUMBER_EXPONENT", 300),
        "max_chain_depth": _env_int("FHIR_SERVER_MAX_CHAIN_DEPTH", 4),
        "max_search_values": _env_int("FHIR_SERVER_MAX_SEARCH_VALUES", 1000),
        "max_rows_read": _env_int("FHIR_SERVER_MAX_ROWS_READ", 5000),
        "max_included": _env_int("FHIR_SERVER_MAX_INCLUDED", 1000),
        "request_seconds": _env_float("FHIR_SERVER_REQUEST_SECONDS", 30.0),
        "idempotency_seconds": _env_int("FHIR_SERVER_IDEMPOTENCY_SECONDS", 86400),
    }


def _default_sqlite_url() -> str:
    var_dir = Path(os.environ.get("FHIR_SERVER_VAR_DIR", "var"))
    return f"sqlite:///{var_dir / 'fhir.sqlite3'}"
