"""Wires the features into the app: write hooks and operations, in one visible place."""

from __future__ import annotations

from flask import Flask

from fhir_server.interactions.context import Services
from fhir_server.rest.operations import OperationRegistry


def wire(app: Flask, services: Services, registry: OperationRegistry) -> None:
    """Register every feature's hooks and operations."""
    from fhir_server.features import (
        auth,
        directory,
        outcomes,
        profiles,
        screening,
        subscriptions,
        web_apps,
        workflow,
    )
    from fhir_server.interactions import builtin_operations, reference_check

    builtin_operations.register(registry)
    auth.install(app, services, registry)
    profiles.install(services, registry)
    workflow.install(services, registry)
    screening.install(services, registry)
    outcomes.install(services, registry)
    subscriptions.install(services, registry)
    directory.install(services, registry)
    # last of the checks, after every transform: references are capabilities
    services.hooks.before.append(reference_check.check_write)
    web_apps.install(app, services)


def register_cli(sub) -> None:  # type: ignore[no-untyped-def]
    """Feature subcommands of `python -m fhir_server`."""
    worker = sub.add_parser("worker", help="deliver Subscription notifications and run the "
                                           "stalled-referral sweep")
    worker.add_argument("--sweep-interval", type=float, default=300.0,
                        help="seconds between stalled-referral sweeps (default 300)")
    worker.set_defaults(handler=_worker)
    from fhir_server import directory_cli
    from fhir_server.auth.cli import register_cli as register_auth_cli
    from fhir_server.conformance.cli import register_cli as register_conformance_cli

    register_auth_cli(sub)
    directory_cli.register_cli(sub)
    register_conformance_cli(sub)
    demo = sub.add_parser("demo-clients", help="register Backend Services clients for the "
                                               "example organizations and print token help")
    demo.add_argument("--key-dir", default="var/demo")
    demo.add_argument("--base-url", default="http://127.0.0.1:8080/fhir")
    demo.set_defaults(handler=_demo_clients)
    rebuild = sub.add_parser("rebuild-outcomes", help="recompute the facts the outcome measures "
                                                      "count from the stored resources and the "
                                                      "Task history")
    rebuild.set_defaults(handler=_rebuild_outcomes)


def _rebuild_outcomes(settings, args) -> int:  # type: ignore[no-untyped-def]
    from fhir_server.features.outcomes import rebuild_database
    from fhir_server.storage.db import Database

    db = Database(settings.database_url)
    try:
        print(f"{rebuild_database(db)} referral Tasks measured again")
    finally:
        db.dispose()
    return 0


def _demo_clients(settings, args) -> int:  # type: ignore[no-untyped-def]
    from pathlib import Path

    from fhir_server.demo import setup_demo_clients, setup_demo_users

    for text in setup_demo_clients(settings, Path(args.key_dir), args.base_url):
        print(text)
    for text in setup_demo_users(settings, Path(args.key_dir)):
        print(text)
    return 0


def run_auth_command(settings, args) -> int:  # type: ignore[no-untyped-def]
    """`users ...` / `clients ...`: the auth CLI handlers on the configured database."""
    from fhir_server.storage.db import Database

    db = Database(settings.database_url) if getattr(args, "auth_needs_db", True) else None
    try:
        return int(args.auth_handler(args, db) or 0)
    finally:
        if db is not None:
            db.dispose()


def _worker(settings, args) -> int:  # type: ignore[no-untyped-def]
    from fhir_server.worker import run

    return run(settings, sweep_interval=args.sweep_interval)
