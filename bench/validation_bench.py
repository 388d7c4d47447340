"""Profile-validation cost per resource (p50/p95/max), for referral Tasks and ServiceRequests.

Usage: .venv/bin/python bench/validation_bench.py [--n 2000]
Reads the official Gravity examples shipped in tests/data (see its SOURCES.md); the goal is
p95 <= 1 ms for Task and ServiceRequest.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from profiles.validator import default_validator  # noqa: E402

EXAMPLES = REPO / "tests" / "data" / "gravity" / "examples-2.3.0"
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


def measure(resource: dict, n: int) -> list[float]:
    """Wall time in ms of n validations (after a warm-up that compiles the profile)."""
    v = default_validator()
    for _ in range(50):
        v.validate(resource)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        v.validate(resource)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    t0 = time.perf_counter()
    default_validator().reg  # noqa: B018 - load the registry
    print(f"registry load: {(time.perf_counter() - t0) * 1000:.1f} ms")
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
