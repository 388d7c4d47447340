"""`python -m fhir_server conformance run|simulate ...`: the kit's command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from fhir_server.conformance.config import ROLE_HELP, Party, RunConfig
from fhir_server.conformance.http import KitError
from fhir_server.conformance.requirements import ACTORS


def register_cli(sub: Any) -> None:
    """Add `conformance run` and `conformance simulate` to the argparse subparsers."""
    conf = sub.add_parser("conformance", help="test any FHIR server for Gravity SDOH Clinical "
                                              "Care conformance, or simulate a partner")
    verbs = conf.add_subparsers(dest="conformance_command", required=True)
    run = verbs.add_parser("run", help="run the conformance tests of one actor",
                           description="Exit code: 0 every SHALL test passed; 1 a SHALL test "
                           "failed; 3 no SHALL failure but some SHALL tests could not run; "
                           "2 usage or set-up error.")
    run.add_argument("--base", required=True, help="FHIR base URL of the server under test")
    run.add_argument("--actor", required=True, choices=list(ACTORS))
    _auth_arguments(run)
    run.add_argument("--tests", default="", metavar="PATTERN",
                     help="comma-separated glob patterns of test ids (e.g. 'search.Task.*,"
                          "workflow.*'); default: all")
    run.add_argument("--report", type=Path, metavar="DIR",
                     help="write JUnit XML, JSON and HTML reports into DIR")
    run.add_argument("--keep", action="store_true", help="keep the test data the kit created")
    run.add_argument("--wait", type=float, default=20.0,
                     help="seconds to wait for notifications and platform work (default 20)")
    run.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT",
                     help="where the kit's notification receiver listens")
    run.add_argument("--callback-url", default="", metavar="URL",
                     help="the receiver's URL as the server reaches it (default: --listen)")
    run.add_argument("--list", action="store_true", help="list the tests and exit")
    run.set_defaults(handler=_run)

    sim = verbs.add_parser("simulate", help="run a simulated partner against a server")
    sim.add_argument("--actor", required=True, choices=["referral-recipient", "referral-source"])
    sim.add_argument("--base", required=True, help="FHIR base URL of the server under test")
    _auth_arguments(sim)
    sim.add_argument("--recipient", default="", metavar="REF",
                     help="referral-source: the Organization to refer to")
    sim.add_argument("--mode", choices=["poll", "subscribe"], default="poll",
                     help="referral-recipient: find new Tasks by polling or a Subscription")
    sim.add_argument("--interval", type=float, default=2.0, help="polling interval (seconds)")
    sim.add_argument("--count", type=int, default=1,
                     help="referrals to process (recipient) or create (source); default 1")
    sim.add_argument("--timeout", type=float, default=300.0,
                     help="give up after this many seconds (default 300)")
    sim.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT")
    sim.add_argument("--callback-url", default="", metavar="URL")
    sim.set_defaults(handler=_simulate)


def _auth_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--auth", choices=["none", "backend"], default="none",
                        help="none, or SMART Backend Services (client_credentials with a "
                             "signed assertion)")
    parser.add_argument("--client-id", default="", help="Backend Services client id")
    parser.add_argument("--key-file", type=Path, help="the client's private JWK")
    parser.add_argument("--token-url", default="",
                        help="token endpoint (default: from .well-known/smart-configuration)")
    parser.add_argument("--scope", default="system/*.cruds", help="scope to request")
    parser.add_argument("--organization", default="", metavar="REF",
                        help="the Organization this client acts for (e.g. Organization/ehr1)")
    parser.add_argument("--party", action="append", default=[],
                        metavar="ROLE=CLIENT_ID,KEY_FILE,ORGANIZATION",
                        help="another identity the kit acts as (roles: " +
                             "; ".join(f"{k}: {v}" for k, v in ROLE_HELP.items()) +
                             "); with --auth none: ROLE=Organization/x")


def config_from(args: argparse.Namespace) -> RunConfig:
    """RunConfig from parsed arguments (ValueError on inconsistent flags)."""
    if args.auth == "backend" and (not args.client_id or args.key_file is None):
        raise ValueError("--auth backend needs --client-id and --key-file")
    parties = {"source": Party("source", args.organization, args.client_id, args.key_file)}
    for spec in args.party:
        party = Party.parse(spec)
        if args.auth == "backend" and not party.client_id:
            raise ValueError(f"--party {spec!r}: with --auth backend give "
                             "ROLE=CLIENT_ID,KEY_FILE,ORGANIZATION")
        parties[party.role] = party
    tests = tuple(p.strip() for p in getattr(args, "tests", "").split(",") if p.strip())
    return RunConfig(base=args.base.rstrip("/"), actor=args.actor, auth=args.auth,
                     token_url=args.token_url, scope=args.scope, parties=parties, tests=tests,
                     report_dir=getattr(args, "report", None),
                     keep=getattr(args, "keep", False), wait=getattr(args, "wait", 20.0),
                     listen=args.listen, callback_url=args.callback_url)


def _with_config(action: Any) -> Any:
    """A subcommand handler: parse the flags into a RunConfig, run `action(config, args)`;
    bad flags and set-up errors (key file, token refused) are exit code 2."""
    def handler(_settings: Any, args: argparse.Namespace) -> int:
        try:
            return int(action(config_from(args), args))
        except (ValueError, KitError) as exc:
            print(f"conformance: {exc}", file=sys.stderr)
            return 2
    return handler


def _run_tests(config: RunConfig, args: argparse.Namespace) -> int:
    from fhir_server.conformance.report import summary_table, write_reports
    from fhir_server.conformance.runner import run
    from fhir_server.conformance.suites import build_suite

    if args.list:
        for test in build_suite(config.actor):
            if config.selected(test.id):
                print(f"{test.id:<45} {test.level:<6} {test.title}")
        return 0
    report = run(config)
    print(summary_table(report), end="")
    if config.report_dir is not None:
        for path in write_reports(report, config.report_dir):
            print(f"wrote {path}")
    return report.exit_code


def _run_simulation(config: RunConfig, args: argparse.Namespace) -> int:
    from fhir_server.conformance.simulate import simulate

    return simulate(config, args)


_run = _with_config(_run_tests)
_simulate = _with_config(_run_simulation)
