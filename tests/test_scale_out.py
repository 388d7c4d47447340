"""Scale-out on one PostgreSQL: two servers on different ports behind HAProxy and two
delivery workers. A referral journey, raced conditional creates and Task updates with
Subscriptions: no lost or reordered notification, no duplicate resource. The full size
(10,000 updates, 50 Subscriptions) is `python -m bench.scale_out`; this is the CI size."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.scale_out import run
from tests.dbs import backends, fresh_database_url
from tests.processes import haproxy_path

pytestmark = pytest.mark.skipif(
    "postgresql" not in backends(),
    reason="several servers share one PostgreSQL (FHIR_TEST_PG_URL); SQLite is one machine")


def test_two_servers_two_workers_one_postgresql(tmp_path: Path):
    if haproxy_path() is None:
        pytest.skip("haproxy is not installed (.ci/run installs the Debian package)")
    url = fresh_database_url("postgresql", tmp_path)
    report = run(url, updates=600, subs=10, clients=4, delivery_timeout=120)
    print("\n" + "\n".join(report.lines()))
    assert report.update_errors == 0
    assert report.lost == 0 and report.reordered == 0
    assert report.delivered == report.events > 600
    assert report.referral_patients == 1 and report.referral_tasks == 1
    assert report.journey == ["accepted", "in-progress"]
    assert set(report.patients_per_identifier.values()) == {1}
    assert min(report.requests_per_server) > 100, report.requests_per_server
    assert report.ok
