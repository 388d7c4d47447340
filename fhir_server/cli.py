"""Command line: `python -m fhir_server COMMAND`.

This module adds `serve`, `init-db`, `config` and `hooks`; every other command belongs to the module
that implements it, which adds it with its own `register_cli(subparsers)` (setting
`handler(settings, args) -> exit status`). The modules are listed in `COMMAND_MODULES`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from types import ModuleType

from fhir_server import demo, directory_cli, loader, worker
from fhir_server.auth import cli as auth_cli
from fhir_server.config import Settings
from fhir_server.conformance import cli as conformance_cli
from fhir_server.features import outcomes

#: Modules that add their own commands (load, worker, demo-clients, import-hsds, users,
#: clients, conformance, rebuild-outcomes).
COMMAND_MODULES: tuple[ModuleType, ...] = (loader, worker, demo, directory_cli, auth_cli,
                                           conformance_cli, outcomes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fhir_server")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the FHIR API with gunicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=None,
                       help="gunicorn processes (default: FHIR_SERVER_WORKERS, or one per core)")
    serve.add_argument("--threads", type=int, default=None,
                       help="threads per process (default: FHIR_SERVER_THREADS, 8)")
    serve.set_defaults(handler=_serve)
    sub.add_parser("init-db", help="apply database migrations").set_defaults(handler=_init_db)
    sub.add_parser("config", help="list the current settings (secrets masked) and where "
                                  "each value comes from").set_defaults(handler=_config)
    sub.add_parser("hooks", help="list the write phases' hooks in the order every write "
                                 "runs them").set_defaults(handler=_hooks)
    for module in COMMAND_MODULES:
        module.register_cli(sub)
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        logging.basicConfig(level=settings.log_level,
                            format="%(asctime)s %(levelname)s %(name)s %(message)s")
        return int(args.handler(settings, args) or 0)
    except ValueError as exc:  # a bad setting: one clear line, not a traceback
        parser.exit(2, f"configuration error: {exc}\n")
    return 2


def _init_db(settings: Settings, args: argparse.Namespace) -> int:
    from fhir_server.seed import seed_definitions
    from fhir_server.storage.db import Database
    from fhir_server.storage.migrate import upgrade
    from fhir_server.wiring import build_services

    db = Database(settings.database_url)
    upgrade(db)
    written = seed_definitions(build_services(settings, db))
    db.dispose()
    print(f"database migrated: {db.url.render_as_string(hide_password=True)}; "
          f"{written} definitional resources stored")
    return 0


def _config(settings: Settings, args: argparse.Namespace) -> int:
    """Print every setting as `NAME=value  # source: meaning`, grouped, secrets masked (the
    unmasked lines are valid in a settings file)."""
    group = None
    for row_group, name, value, source, doc in settings.describe():
        if row_group != group:
            print(f"{'' if group is None else chr(10)}# -- {row_group}")
            group = row_group
        shown = f'"{value}"' if any(c.isspace() for c in value) else value
        print(f"{name}={shown}".ljust(46) + f"  # {source}: {doc}")
    return 0


def _hooks(settings: Settings, args: argparse.Namespace) -> int:
    """Print the write hooks: phase, order, name, resource types (as every write runs them)."""
    from fhir_server.wiring import build_services

    services = build_services(settings)
    for line in services.phases.listing():
        print(line)
    services.db.dispose()
    return 0


def default_workers() -> int:
    """One gunicorn process per CPU core this process may use, at least 2: the work is
    CPU-bound Python (one core per process at most), and each process's threads serve
    the requests that wait on the database. Measured on 2 cores (bench/crud_bench.py):
    4 processes served no more than 2 and held 475 MB instead of 280 MB."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 2
    return max(2, cores)


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from gunicorn.app.base import BaseApplication

    from fhir_server.app import create_app
    from fhir_server.rest.gunicorn_worker import WORKER_CLASS

    host, port = args.host, args.port
    workers = args.workers or settings.serve_workers or default_workers()
    threads = args.threads or settings.serve_threads

    class _Gunicorn(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", workers)
            self.cfg.set("threads", threads)
            # gthread, answering protocol errors (414, 431, bad chunks) with OperationOutcomes
            self.cfg.set("worker_class", WORKER_CLASS)
            self.cfg.set("limit_request_line", 8190)  # gunicorn's maximum; longer: 414
            self.cfg.set("accesslog", settings.access_log or None)
            self.cfg.set("timeout", 120)
            self.cfg.set("keepalive", 30)

        def load(self):  # type: ignore[no-untyped-def]
            return create_app(settings)

    if not settings.base_url:  # the apps' sign-in needs absolute redirect URIs
        from fhir_server.features.web_apps import register_app_clients, serve_roots
        from fhir_server.storage.db import Database

        db = Database(settings.database_url)
        register_app_clients(db, settings, serve_roots(host, port))
        db.dispose()
    print(f"serving FHIR R4 on http://{host}:{port}/fhir and the apps on "
          f"http://{host}:{port}/", file=sys.stderr)
    _Gunicorn().run()
    return 0
