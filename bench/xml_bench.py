"""Cost of FHIR XML against JSON, measured in the same run.

    .venv/bin/python bench/xml_bench.py [--repeat N]

For a Task read, a 20-entry searchset Bundle and a 10-entry transaction Bundle, times
encoding (JSON tree → bytes) and decoding (bytes → JSON tree) with orjson and with the XML
format layer, and prints the XML/JSON ratios.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fhir_server.formats import json_default, json_to_xml, xml_to_json  # noqa: E402

MAX_BYTES = 50 * 1024 * 1024
NARRATIVE = ('<div xmlns="http://www.w3.org/1999/xhtml"><p><b>Referral task</b></p>'
             '<p>Patient <a href="Patient/pat-1">Jane Doe</a>: connect to a counsellor for '
             'depression follow-up (PHQ-9 score 15).</p></div>')


def task(i: int) -> dict[str, Any]:
    """A Gravity referral Task like the ones the server returns."""
    return {
        "resourceType": "Task",
        "id": f"task-{i}",
        "meta": {
            "versionId": "3",
            "lastUpdated": "2024-05-01T10:15:30.123Z",
            "profile": ["http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/"
                        "SDOHCC-TaskForReferralManagement"],
        },
        "text": {"status": "generated", "div": NARRATIVE},
        "status": "in-progress",
        "intent": "order",
        "priority": "routine",
        "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code",
                             "code": "fulfill", "display": "Fulfill the focal request"}]},
        "focus": {"reference": f"ServiceRequest/sr-{i}"},
        "for": {"reference": "Patient/pat-1", "display": "Jane Doe"},
        "authoredOn": "2024-04-30T09:00:00Z",
        "lastModified": "2024-05-01T10:15:30Z",
        "requester": {"reference": "PractitionerRole/role-1"},
        "owner": {"reference": "Organization/cbo-7", "display": "Community Counselling"},
        "businessStatus": {"text": "Appointment scheduled"},
        "restriction": {"period": {"end": "2024-06-30"}},
        "note": [{"text": "Patient prefers evening appointments.",
                  "time": "2024-05-01T10:00:00Z"}],
        "output": [{
            "type": {"coding": [{"system": "http://hl7.org/fhir/us/sdoh-clinicalcare/"
                                 "CodeSystem/SDOHCC-CodeSystemTemporaryCodes",
                                 "code": "resulting-activity"}]},
            "valueReference": {"reference": f"Procedure/proc-{i}"},
        }],
    }


def searchset(n: int) -> dict[str, Any]:
    return {
        "resourceType": "Bundle", "id": "search-1", "type": "searchset", "total": n,
        "link": [{"relation": "self", "url": "http://example.org/fhir/Task?status=in-progress"}],
        "entry": [{"fullUrl": f"http://example.org/fhir/Task/task-{i}", "resource": task(i),
                   "search": {"mode": "match"}} for i in range(n)],
    }


def transaction(n: int) -> dict[str, Any]:
    entries = []
    for i in range(n):
        body = task(i)
        del body["id"], body["meta"]
        entries.append({"fullUrl": f"urn:uuid:00000000-0000-4000-8000-{i:012d}",
                        "resource": body, "request": {"method": "POST", "url": "Task"}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def best_time(fn: Callable[[], object], repeat: int) -> float:
    """Best mean seconds per call over 5 rounds of ``repeat`` calls."""
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        best = min(best, (time.perf_counter() - start) / repeat)
    return best


def measure(name: str, resource: dict[str, Any], repeat: int) -> dict[str, float]:
    json_bytes = orjson.dumps(resource)
    xml_bytes = json_to_xml(resource)
    assert xml_to_json(xml_bytes, max_bytes=MAX_BYTES) == resource, "round trip failed"
    row = {
        "json_encode": best_time(lambda: orjson.dumps(resource, default=json_default), repeat),
        "json_decode": best_time(lambda: orjson.loads(json_bytes), repeat),
        "xml_encode": best_time(lambda: json_to_xml(resource), repeat),
        "xml_decode": best_time(lambda: xml_to_json(xml_bytes, max_bytes=MAX_BYTES), repeat),
    }
    print(f"{name:<24} {len(json_bytes):>8} {len(xml_bytes):>8} "
          f"{row['json_encode'] * 1e6:>10.1f} {row['xml_encode'] * 1e6:>10.1f} "
          f"{row['xml_encode'] / row['json_encode']:>7.1f}x "
          f"{row['json_decode'] * 1e6:>10.1f} {row['xml_decode'] * 1e6:>10.1f} "
          f"{row['xml_decode'] / row['json_decode']:>7.1f}x")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    print(f"{'payload':<24} {'json B':>8} {'xml B':>8} {'json enc':>10} {'xml enc':>10} "
          f"{'ratio':>8} {'json dec':>10} {'xml dec':>10} {'ratio':>8}   (µs per call)")
    measure("Task read", task(1), args.repeat * 10)
    measure("searchset, 20 entries", searchset(20), args.repeat)
    measure("transaction, 10 entries", transaction(10), args.repeat)


if __name__ == "__main__":
    main()
