"""The outcomes dashboard (`/dashboard`): for managers of an organization and for the
network administrator. Did referred patients get care, how fast, for whom, and did they get
better: the funnel, waiting times, stalled referrals, organizations, equity and outcomes
for a period, each table also as CSV. Every figure comes from `$referral-metrics` with the
signed-in user's token, so a manager sees their organization's referrals and the
administrator the whole network."""

from __future__ import annotations

from flask import Blueprint

from fhir_server.web.apps import AppSpec, app_blueprint
from fhir_server.web.sealing import Sealer

CLIENT_ID = "mh-referral-dashboard"
# What the dashboard reads for the signed-in user (the policy narrows it to what the user's
# organization may see; Observations and Coverages only count where the user may see them).
SCOPE = ("openid fhirUser online_access user/Task.rs user/Patient.rs user/Observation.rs "
         "user/Coverage.rs user/Organization.rs user/HealthcareService.rs "
         "user/PractitionerRole.rs user/Practitioner.rs user/Measure.rs")

SPEC = AppSpec(
    name="dashboard", path="/dashboard", title="Outcomes",
    summary="See whether referred patients got care, how fast, for whom, and whether they "
            "got better: the referral funnel, waiting times, stalled referrals, equity and "
            "screening outcomes, with every table as CSV.",
    audience="managers of referring and receiving organizations, and the network "
             "administrator",
    client_id=CLIENT_ID, scope=SCOPE, nav=(("dashboard.overview", "Overview"),),
    roles=("manager", "administrator"))


def blueprint(config, sealer: Sealer) -> Blueprint:  # type: ignore[no-untyped-def]
    """The `/dashboard` blueprint."""
    from fhir_server.web.dashboard.views import add_views

    bp = app_blueprint(SPEC, config, sealer)
    add_views(bp)
    return bp
