"""Search plans on a loaded database, in process: the plain plan against the adaptive one
(`ScanPlan` in fhir_server/storage/search_sql.py), interleaved run by run, for an
unrestricted caller; then the same broad searches by the staff of the organizations that own
and request the most Tasks (narrowed to their compartment, where the server keeps the plain
plan).

    python -m bench.plan_bench DATABASE_URL [--runs 30]

DATABASE_URL is a database the search benchmark loaded (`bench/search_bench.py --size
1000000` prints it). No HTTP: the figures are the search alone (SQL and bodies). Both plans
must return the same page and total; the benchmark stops if they differ.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text  # noqa: E402

from fhir_server.auth.context import AccessContext  # noqa: E402
from fhir_server.auth.scopes import parse_scopes  # noqa: E402
from fhir_server.config import Settings  # noqa: E402
from fhir_server.interactions import access  # noqa: E402
from fhir_server.interactions.context import Call  # noqa: E402
from fhir_server.search.parser import parse_search  # noqa: E402
from fhir_server.storage.db import Database  # noqa: E402
from fhir_server.storage.search_sql import ADAPTIVE, ScanPlan, execute_search  # noqa: E402
from fhir_server.wiring import build_services  # noqa: E402

BASE = "http://localhost/fhir"
Params = list[tuple[str, str]]

#: searches whose driving lookup is broad (a status, a code, a `_has` over many Tasks) and a
#: selective one for comparison
OPEN_SEARCHES: list[tuple[str, Params]] = [
    ("Patient", [("_has:Task:patient:status", "in-progress")]),
    ("Task", [("owner:missing", "true"), ("status", "requested")]),
    ("Task", [("status", "requested")]),
    ("Observation", [("code", "http://loinc.org|44261-6")]),
    ("Task", [("status", "cancelled")]),
    ("Task", [("status", "in-progress"), ("owner:missing", "false")]),
]
#: broad searches, then the organization's own polling (`{org}`: its reference)
STAFF_SEARCHES: list[tuple[str, Params]] = [
    ("Task", [("owner:missing", "true"), ("status", "requested")]),
    ("Task", [("status", "requested")]),
    ("Task", [("status", "in-progress")]),
    ("Patient", [("_has:Task:patient:status", "in-progress")]),
    ("Task", [("owner", "{org}"), ("status", "requested")]),
    ("Task", [("requester", "{org}"), ("status", "in-progress")]),
    ("Task", [("requester", "{org}")]),
]


def busiest(db: Database, param: str) -> str:
    """The organization most Tasks name in `param` (owner, requester)."""
    with db.read() as conn:
        return conn.execute(text(
            "SELECT target_id FROM idx_reference WHERE res_type = 'Task' AND param = :p "
            "AND target_type = 'Organization' GROUP BY target_id ORDER BY count(*) DESC "
            "LIMIT 1"), {"p": param}).scalar_one()


def timed(db: Database, call: Call | None, rt: str, params: Params,
          plan: ScanPlan | None) -> tuple[float, tuple]:
    """(milliseconds, (total, ids of the page)) of one search."""
    with db.read() as conn:
        restrict = access.restriction(conn, call) if call is not None else None
        parsed = parse_search(rt, params, strict=True, base_url=BASE)
        started = time.perf_counter()
        result = execute_search(conn, parsed, restrict=restrict, scan=plan)
        elapsed = (time.perf_counter() - started) * 1000
    return elapsed, (result.total, [m.res_id for m in result.matches])


def compare(db: Database, call: Call | None, rt: str, params: Params, runs: int,
            plans: dict[str, ScanPlan | None]) -> str:
    """p50 and p95 of each plan, runs interleaved in a random order."""
    times: dict[str, list[float]] = {name: [] for name in plans}
    for i in range(runs + 2):  # two warm-up runs
        order = list(plans.items())
        random.shuffle(order)
        pages = {}
        for name, plan in order:
            ms, pages[name] = timed(db, call, rt, params, plan)
            if i >= 2:
                times[name].append(ms)
        if len(set(map(repr, pages.values()))) > 1:
            raise SystemExit(f"plans disagree on {rt}?{params}: {pages}")
    cells = []
    for values in times.values():
        values.sort()
        cells.append(f"{statistics.median(values):9.2f} {values[int(len(values) * .95) - 1]:8.2f}")
    query = rt + "?" + "&".join(f"{k}={v}" for k, v in params)
    return f"{query:62} " + "  ".join(cells)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url", metavar="DATABASE_URL")
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    db = Database(args.url)
    services = build_services(Settings.from_env(database_url=args.url, base_url=BASE), db)
    print(f"unrestricted caller (ms)\n{'search':62} {'plain p50':>9} {'p95':>8}  "
          f"{'adaptive':>9} {'p95':>8}", flush=True)
    for rt, params in OPEN_SEARCHES:
        print(compare(db, None, rt, params, args.runs,
                      {"plain": None, "adaptive": ADAPTIVE}), flush=True)
    for org in (busiest(db, "owner"), busiest(db, "requester")):
        ctx = AccessContext(client_id="plan-bench", scopes=parse_scopes("system/*.rs"),
                            organization=f"Organization/{org}")
        call = Call(services=services, base_url=BASE, access=ctx)
        print(f"staff of Organization/{org} (ms; the server's plan: plain for them)\n"
              f"{'search':62} {'p50':>9} {'p95':>8}", flush=True)
        for rt, params in STAFF_SEARCHES:
            own = [(k, v.format(org=f"Organization/{org}")) for k, v in params]
            print(compare(db, call, rt, own, max(5, args.runs // 3), {"server": ADAPTIVE}),
                  flush=True)
    db.dispose()


if __name__ == "__main__":
    main()
