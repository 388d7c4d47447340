"""`make bench`: every benchmark in turn, each printing its own figures.

Runs the CRUD (with wrk, and CPU per request in process), bundle, XML, validation, auth,
matching, subscription, search, history, delivery-kill, scale-out and soak benchmarks with
modest durations (about 40 minutes in all on a 2-core machine). Figures go to the README by
hand, with the command that produced them.
"""

from __future__ import annotations

import subprocess
import sys

STEPS = [
    [sys.executable, "-m", "bench.crud_bench", "--seconds", "20"],
    [sys.executable, "-m", "bench.cpu_bench"],
    [sys.executable, "-m", "bench.bundle_bench", "--seconds", "15"],
    [sys.executable, "bench/xml_http_bench.py"],
    [sys.executable, "bench/validation_bench.py"],
    [sys.executable, "-m", "bench.auth_bench"],
    [sys.executable, "bench/match_bench.py"],
    [sys.executable, "-m", "bench.subscription_bench"],
    [sys.executable, "bench/search_bench.py", "--size", "100000", "--runs", "100"],
    [sys.executable, "bench/history_bench.py", "--size", "20000"],
    [sys.executable, "-m", "bench.delivery_kill_bench", "--seconds", "80"],
    [sys.executable, "-m", "bench.scale_out", "--updates", "2000", "--subs", "50"],
    [sys.executable, "-m", "bench.soak", "--minutes", "5", "--resources", "20000"],
]


def main() -> int:
    failed = 0
    for step in STEPS:
        print(f"== {' '.join(step[1:])}", flush=True)
        if subprocess.run(step).returncode != 0:
            failed += 1
            print(f"!! failed: {' '.join(step[1:])}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
