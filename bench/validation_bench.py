"""Validation cost per resource on the write path (p50/p95/max): base R4 (structure, every
core invariant, extensions, narrative) plus the profiles the resource claims or the server
requires, for referral Tasks, ServiceRequests and the other Gravity resources.

Usage: .venv/bin/python bench/validation_bench.py [--n 2000] [--repo PATH]
`--repo` measures another checkout's validator (e.g. main before a change) with the same
script, for a before/after ratio in one run. Reads the official Gravity examples shipped in
tests/data (see its SOURCES.md); the goal is p95 <= 1 ms for Task and ServiceRequest.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if "--repo" in sys.argv:
    REPO = Path(sys.argv[sys.argv.index("--repo") + 1]).resolve()
sys.path.insert(0, str(REPO))

from profiles.base_r4 import validate_base  # noqa: E402
from profiles.policy import required_profiles  # noqa: E402
from profiles.validator import default_validator  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "tests" / "data" / "gravity" / "examples-2.3.0"
CASES = {
    "Task (referral, completed)":
        "Task-SDOHCC-TaskReferralManagementOrderFulfillmentCompletedExample.json",
    "Task (referral, sub-task)":
        "Task-SDOHCC-TaskReferralManagementOrderSubtaskAcceptedExample.json",
    "ServiceRequest":
        "ServiceRequest-SDOHCC-ServiceRequestActiveFoodPantryApplicationAssistExample.json",
    "ServiceRequest (sub-referral)":
        "ServiceRequest-SDOHCC-ServiceRequestSubreferralGardenProgramExample.json",
    "Task (patient, questionnaire)":
        "Task-SDOHCC-TaskPatientRiskQuestionnaireCompletedExample.json",
    "Condition": "Condition-SDOHCC-ConditionFoodInsecurityExample.json",
    "Observation (screening response)":
        "Observation-SDOHCC-ObservationResponseHungerVitalSignQuestion3Example.json",
}


def write_path_validation(resource: dict) -> None:
    """What a create does: base R4, then the claimed and required profiles."""
    validate_base(resource, expected_type=resource["resourceType"])
    default_validator().validate(resource, profiles=required_profiles(resource))


def measure(resource: dict, n: int) -> list[float]:
    """Wall time in ms of n validations (after a warm-up that compiles the profile)."""
    for _ in range(50):
        write_path_validation(resource)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        write_path_validation(resource)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--repo", default=str(REPO), help="checkout whose validator to time")
    args = parser.parse_args()
    t0 = time.perf_counter()
    default_validator().reg  # noqa: B018 - load the registry
    print(f"validator of {REPO}; registry load: {(time.perf_counter() - t0) * 1000:.1f} ms")
    print(f"{'resource':36} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for label, name in CASES.items():
        resource = json.loads((EXAMPLES / name).read_text("utf-8"))
        times = sorted(measure(resource, args.n))
        p50 = statistics.median(times)
        p95 = times[int(len(times) * 0.95) - 1]
        print(f"{label:36} {p50:8.3f} {p95:8.3f} {times[-1]:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
