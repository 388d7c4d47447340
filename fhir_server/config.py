"""All configuration, in one place: every setting of the server, the worker and the
commands, typed, with its environment variable, default and meaning.

Values come from, highest first: explicit overrides (tests), environment variables, the
settings file (`.env` in the current folder, or the file `FHIR_SERVER_ENV_FILE` names:
`NAME=value` lines, `#` comments), then the defaults below. The server, the worker and
every `python -m fhir_server` command read the same sources, so they agree on the database.
`python -m fhir_server config` lists the current values (secrets masked) and where each
came from.

Adding a setting: add one field to `Settings` with `setting(default, "ENV_NAME", "meaning")`
(`secret=True` when its value must never be printed), read it as `settings.<field>`, and add
its row to the README's configuration table (a test checks the table and that no other module
reads the environment).
"""

from __future__ import annotations

import os
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ENV_FILE_VARIABLE = "FHIR_SERVER_ENV_FILE"
DEFAULT_ENV_FILE = ".env"


def setting(default: Any, env: str, doc: str, *, group: str = "server",
            secret: bool = False) -> Any:
    """A Settings field: its default, environment variable, meaning and listing group."""
    return field(default=default, metadata={"env": env, "doc": doc, "group": group,
                                            "secret": secret})


@dataclass(frozen=True)
class Settings:
    """Every setting. Build with `Settings.from_env()`; tests pass overrides explicitly."""

    # -- the server ----------------------------------------------------------------------
    database_url: str = setting(
        "sqlite:///var/fhir.sqlite3", "DATABASE_URL",
        "SQLAlchemy URL of the database, e.g. postgresql+psycopg://user@host:port/db "
        "(default: SQLite in FHIR_SERVER_VAR_DIR)", secret=True)
    var_dir: str = setting("var", "FHIR_SERVER_VAR_DIR",
                           "folder of the default SQLite database (relative to the current "
                           "folder)")
    base_url: str = setting("", "FHIR_SERVER_BASE_URL",
                            "absolute FHIR base used in links and Location (empty: derived "
                            "from each request's Host)")
    max_body_bytes: int = setting(10 * 1024 * 1024, "FHIR_SERVER_MAX_BODY_BYTES",
                                  "larger request bodies get 413")
    max_bundle_entries: int = setting(5000, "FHIR_SERVER_MAX_BUNDLE_ENTRIES",
                                      "larger Bundles get 413")
    default_page_size: int = setting(20, "FHIR_SERVER_DEFAULT_PAGE_SIZE",
                                     "search and history page size without _count")
    max_page_size: int = setting(1000, "FHIR_SERVER_MAX_PAGE_SIZE", "largest _count honoured")
    require_if_match_for_tasks: bool = setting(
        True, "FHIR_SERVER_REQUIRE_IF_MATCH_TASKS",
        "referral Task updates must send If-Match (428 otherwise)")
    allow_plain_http_full_resource: bool = setting(
        False, "FHIR_SERVER_ALLOW_PLAIN_HTTP_FULL_RESOURCE",
        "full-resource Subscriptions to http:// endpoints (local development only)")
    auth_mode: str = setting("on", "FHIR_SERVER_AUTH",
                             "'off' only for local development (no tokens; logs a warning)")
    auth_base_url: str = setting("", "FHIR_SERVER_AUTH_BASE_URL",
                                 "where the authorization server is advertised (empty: "
                                 "<host>/auth)")
    required_profiles: str = setting(
        "default", "FHIR_SERVER_REQUIRED_PROFILES",
        "'default' (SDOHCC for referral Tasks and ServiceRequests), 'none', or JSON "
        "{type: [profile URLs]}")
    strict_profiles: bool = setting(
        False, "FHIR_SERVER_STRICT_PROFILES",
        "an unknown claimed profile or extension is an error, not a warning")
    referential_integrity_on_delete: str = setting(
        "referral", "FHIR_SERVER_REFERENTIAL_INTEGRITY_ON_DELETE",
        "deleting a resource live resources still reference: 'referral' refuses it (409) for "
        "the referral resources and parties, 'all' for every type, 'off' allows it")
    platform_organization: str = setting(
        "", "FHIR_SERVER_PLATFORM_ORGANIZATION",
        "Organization/x: act as the coordination platform (enables $assign-recipient)")
    stalled_policy: str = setting(
        "", "FHIR_SERVER_STALLED_POLICY",
        "e.g. stat=1h,urgent=1bd,routine=3bd,accepted=7d,in-progress=14d (empty: IG "
        "defaults)")
    capacity_stale_days: int = setting(
        30, "FHIR_SERVER_CAPACITY_STALE_DAYS",
        "directory capacity older than this lowers a service's $match rank")
    log_level: str = setting("INFO", "FHIR_SERVER_LOG_LEVEL", "logging level of every process")
    small_cell_threshold: int = setting(
        11, "FHIR_SERVER_SMALL_CELL_THRESHOLD",
        "equity breakdowns show counts of 1 to N-1 as <N (0 or 1: show every count)")
    follow_up_screening_weeks: int = setting(
        6, "FHIR_SERVER_FOLLOW_UP_SCREENING_WEEKS",
        "weeks after care starts that the follow-up PHQ-9/GAD-7 request is due (4 to 12; 0: "
        "none)")
    # -- input limits (hostile input gets a 4xx OperationOutcome, never a crash) ---------
    max_json_depth: int = setting(
        64, "FHIR_SERVER_MAX_JSON_DEPTH",
        "nesting of objects and arrays in a JSON or XML body (400 deeper)", group="limits")
    max_number_digits: int = setting(
        32, "FHIR_SERVER_MAX_NUMBER_DIGITS",
        "significant digits of a number in a body (400 beyond)", group="limits")
    max_number_exponent: int = setting(
        300, "FHIR_SERVER_MAX_NUMBER_EXPONENT",
        "|decimal exponent| of a number in a body (400 beyond: every number stays a finite "
        "double and reads back unchanged)", group="limits")
    max_chain_depth: int = setting(
        4, "FHIR_SERVER_MAX_CHAIN_DEPTH",
        "chained parameters and _has nested in one search parameter (400 deeper)",
        group="limits")
    max_search_values: int = setting(
        1000, "FHIR_SERVER_MAX_SEARCH_VALUES",
        "search parameters plus comma-separated values in one search (400 too-costly "
        "beyond)", group="limits")
    # -- the cost budget of one request (a batch's entries share it) --------------------
    max_rows_read: int = setting(
        5000, "FHIR_SERVER_MAX_ROWS_READ",
        "resources one request may read: search matches, includes, history entries; a "
        "batch's entries share it (422 too-costly)", group="limits")
    max_included: int = setting(
        1000, "FHIR_SERVER_MAX_INCLUDED",
        "resources _include / _revinclude may add in one request (422 too-costly)",
        group="limits")
    request_seconds: float = setting(
        30.0, "FHIR_SERVER_REQUEST_SECONDS",
        "database time of one request: checked between statements, SQLite statements "
        "interrupted, PostgreSQL statement_timeout (422 too-costly)", group="limits")
    idempotency_seconds: int = setting(
        86400, "FHIR_SERVER_IDEMPOTENCY_SECONDS",
        "how long a response sent for an Idempotency-Key / X-Request-Id is remembered",
        group="limits")
    # -- security ------------------------------------------------------------------------
    login_max_failures: int = setting(
        5, "FHIR_SERVER_LOGIN_MAX_FAILURES",
        "failed sign-ins that lock an account (an address: four times as many)")
    login_lockout_seconds: int = setting(900, "FHIR_SERVER_LOGIN_LOCKOUT_SECONDS",
                                         "how long a sign-in lockout lasts")
    audit_retention_days: int = setting(
        2190, "FHIR_SERVER_AUDIT_RETENTION_DAYS",
        "AuditEvents older than this are removed by the worker's sweep (0: kept forever)")
    audit_reads: bool = setting(
        True, "FHIR_SERVER_AUDIT_READS",
        "record reads of patient data as AuditEvents (off only to measure what it costs)")
    # -- `serve` (gunicorn) --------------------------------------------------------------
    serve_workers: int = setting(
        0, "FHIR_SERVER_WORKERS",
        "gunicorn worker processes (0: one per CPU core, at least 2; each holds about "
        "110 MB, and threads, not processes, cover waits on the database)", group="serve")
    serve_threads: int = setting(8, "FHIR_SERVER_THREADS", "threads per gunicorn worker",
                                 group="serve")
    access_log: str = setting("", "FHIR_SERVER_ACCESS_LOG",
                              "gunicorn access log file, '-' for stdout (empty: none)",
                              group="serve")
    # -- `worker` (Subscription delivery) ------------------------------------------------
    worker_poll: float = setting(0.05, "FHIR_SERVER_WORKER_POLL",
                                 "seconds between polls for due deliveries", group="worker")
    worker_idle_poll: float = setting(
        0.5, "FHIR_SERVER_WORKER_IDLE_POLL",
        "longest pause between polls while idle (the pause doubles from FHIR_SERVER_WORKER_POLL "
        "per idle poll; on PostgreSQL new events also wake the worker at once by NOTIFY)",
        group="worker")
    worker_threads: int = setting(8, "FHIR_SERVER_WORKER_THREADS", "sender threads",
                                  group="worker")
    worker_max_inflight: int = setting(64, "FHIR_SERVER_WORKER_MAX_INFLIGHT",
                                       "Subscriptions being delivered at once", group="worker")
    worker_lease_seconds: float = setting(
        6.0, "FHIR_SERVER_WORKER_LEASE_SECONDS",
        "a delivery worker's lease on a Subscription, heartbeated every third of it; a killed "
        "worker's Subscriptions are picked up after at most this long", group="worker")
    subscription_error_window: float = setting(
        600.0, "FHIR_SERVER_SUBSCRIPTION_ERROR_WINDOW",
        "seconds of failures after which a Subscription's status becomes error",
        group="worker")
    subscription_backoff_base: float = setting(
        1.0, "FHIR_SERVER_SUBSCRIPTION_BACKOFF_BASE", "first retry delay in seconds",
        group="worker")
    subscription_backoff_max: float = setting(
        300.0, "FHIR_SERVER_SUBSCRIPTION_BACKOFF_MAX", "longest retry delay in seconds",
        group="worker")
    subscription_retention_days: float = setting(
        30.0, "FHIR_SERVER_SUBSCRIPTION_RETENTION_DAYS", "days events are kept for $events",
        group="worker")
    smtp_host: str = setting("localhost", "FHIR_SERVER_SMTP_HOST",
                             "SMTP server of the email channel", group="worker")
    smtp_port: int = setting(25, "FHIR_SERVER_SMTP_PORT", "its port", group="worker")
    smtp_from: str = setting("fhir-server@localhost", "FHIR_SERVER_SMTP_FROM",
                             "sender address of notification emails", group="worker")
    # -- our web apps (fhir_server/web/) --------------------------------------------------
    web_api_base: str = setting("", "FHIR_SERVER_WEB_API_BASE",
                                "the FHIR base the apps use (empty: this server, in process)",
                                group="web")
    web_secret_file: str = setting(
        "", "FHIR_SERVER_WEB_SECRET_FILE",
        "file holding the cookie-sealing key, created on first use (empty: "
        "<FHIR_SERVER_VAR_DIR>/web-secret.key)", group="web")
    web_refresh_seconds: int = setting(15, "FHIR_SERVER_WEB_REFRESH_SECONDS",
                                       "how often lists poll for changes (at least 10)",
                                       group="web")
    # -- the clinician app launched from external EHRs (/app) ----------------------------
    app_client_id: str = setting("mh-referral-app", "FHIR_SERVER_APP_CLIENT_ID",
                                 "the app's client_id at external EHRs (and at this server)",
                                 group="app")
    app_client_secret_file: str = setting(
        "", "FHIR_SERVER_APP_CLIENT_SECRET_FILE",
        "file holding the secret, for EHRs that registered the app as a confidential "
        "client (empty: a public client, PKCE only)", group="app")
    app_redirect_uri: str = setting("", "FHIR_SERVER_APP_REDIRECT_URI",
                                    "the callback given to EHRs (empty: <host>/app/callback)",
                                    group="app")
    app_allowed_iss: str = setting(
        "", "FHIR_SERVER_APP_ALLOWED_ISS",
        "comma-separated external EHR FHIR bases accepted as iss (empty refuses every "
        "external launch unless auth is off)", group="app")
    app_scope: str = setting(
        "openid fhirUser patient/Patient.rs patient/Observation.rs "
        "patient/QuestionnaireResponse.rs patient/ServiceRequest.cr",
        "FHIR_SERVER_APP_SCOPE", "scopes asked of an external EHR besides launch", group="app")
    app_timeout: float = setting(10.0, "FHIR_SERVER_APP_TIMEOUT",
                                 "seconds for each call to another server", group="app")
    # -- patient reminders (fhir_server/reminders/README.md) -----------------------------
    reminder_link: str = setting(
        "", "FHIR_SERVER_REMINDER_LINK",
        "the only link patient reminders carry (empty: <root of FHIR_SERVER_BASE_URL>/me/)",
        group="reminders")
    reminder_quiet_hours: str = setting(
        "21:00-08:00", "FHIR_SERVER_REMINDER_QUIET_HOURS",
        "no patient reminder is sent between these local times (empty: never quiet)",
        group="reminders")
    reminder_timezone: str = setting("America/New_York", "FHIR_SERVER_REMINDER_TIMEZONE",
                                     "the IANA time zone of the quiet hours",
                                     group="reminders")
    sms_url: str = setting(
        "", "FHIR_SERVER_SMS_URL",
        "HTTP SMS gateway for patient reminders: POST JSON {to, from, text} with a bearer "
        "token (empty: e-mail only)", group="reminders")
    sms_token_file: str = setting("", "FHIR_SERVER_SMS_TOKEN_FILE",
                                  "file holding the gateway's credential (never the "
                                  "environment)", group="reminders")
    sms_sender: str = setting("", "FHIR_SERVER_SMS_FROM", "the sender number of text messages",
                              group="reminders")

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Settings from the environment and the settings file (overrides win). A value
        that does not parse raises ValueError naming its variable."""
        sources = _sources()
        values: dict[str, object] = {}
        for f, kind in _typed_fields():
            raw = sources.get(f.metadata["env"])
            if raw not in (None, ""):
                values[f.name] = _parse(f.metadata["env"], raw, kind)  # type: ignore[arg-type]
        if "database_url" not in values and "var_dir" in values:
            values["database_url"] = f"sqlite:///{Path(str(values['var_dir'])) / 'fhir.sqlite3'}"
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    def describe(self) -> list[tuple[str, str, str, str, str]]:
        """(group, variable, shown value, source, meaning) of every setting, secrets masked."""
        sources = _sources()
        env_file = _env_file_path()
        out = []
        for f, _kind in _typed_fields():
            env = f.metadata["env"]
            value = getattr(self, f.name)
            shown = _mask(value) if f.metadata["secret"] else _show(value)
            if os.environ.get(env) not in (None, ""):
                source = "environment"
            elif sources.get(env) not in (None, ""):
                source = str(env_file)
            else:
                source = "default" if value == f.default else "derived"
            out.append((f.metadata["group"], env, shown, source, f.metadata["doc"]))
        return out


@typing.no_type_check
def _typed_fields() -> list[tuple[Any, type]]:
    hints = typing.get_type_hints(Settings)
    return [(f, hints[f.name]) for f in fields(Settings)]


def _parse(env: str, raw: str, kind: type) -> object:
    text = raw.strip()
    if kind is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{env}: {raw!r} is not on/off")
    if kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            raise ValueError(f"{env}: {raw!r} is not a number") from None
    return raw


def _env_file_path() -> Path:
    return Path(os.environ.get(ENV_FILE_VARIABLE) or DEFAULT_ENV_FILE)


def _sources() -> dict[str, str]:
    """The settings file's values overlaid with the environment."""
    merged = read_env_file(_env_file_path())
    merged.update(os.environ)
    return merged


def read_env_file(path: Path) -> dict[str, str]:
    """`NAME=value` lines (optionally `export NAME=value`, values optionally quoted);
    blank lines and `#` comments ignored; a missing file is empty."""
    try:
        text = path.read_text("utf-8")
    except (FileNotFoundError, IsADirectoryError):
        return {}
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"{path}:{number}: expected NAME=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name.strip()] = value
    return values


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _mask(value: object) -> str:
    """A secret for display: a URL keeps everything but its password; anything else is
    replaced by asterisks."""
    text = str(value)
    if not text:
        return ""
    if "://" not in text:
        return "********"
    parts = urlsplit(text)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return text
    netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def public_root(base_url: str) -> str:
    """`https://host[/prefix]` of a FHIR base URL `https://host[/prefix]/fhir`."""
    base = base_url.strip().rstrip("/")
    if not base:
        return ""
    if base.endswith("/fhir"):
        return base[: -len("/fhir")]
    parts = urlsplit(base)
    return f"{parts.scheme}://{parts.netloc}"
