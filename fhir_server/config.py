"""All configuration, read once from environment variables with safe defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw not in (None, "") else default


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
            "allow_plain_http_full_resource": _env_bool(
                "FHIR_SERVER_ALLOW_PLAIN_HTTP_FULL_RESOURCE", False),
        }
        stale = os.environ.get("FHIR_SERVER_CAPACITY_STALE_DAYS")
        if stale:
            values["extra"] = {"capacity_stale_days": stale}
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


def _default_sqlite_url() -> str:
    var_dir = Path(os.environ.get("FHIR_SERVER_VAR_DIR", "var"))
    return f"sqlite:///{var_dir / 'fhir.sqlite3'}"
