"""The provider workspace (`/workspace`): staff of a receiving organization (a community
organization or behavioral-health provider) sign in, work their referral queue, claim open
referrals offered to several providers, record outcomes, keep their capacity current and
see their numbers. Every read and write goes through the FHIR API with the user's token."""

from __future__ import annotations

from flask import Blueprint

from fhir_server.web.apps import AppSpec, app_blueprint
from fhir_server.web.config import WebConfig
from fhir_server.web.sealing import Sealer

CLIENT_ID = "mh-referral-workspace"
# What the workspace may do for the signed-in user (the policy narrows it to what the user's
# organization may see and change).
SCOPE = ("openid fhirUser online_access user/Task.rus user/ServiceRequest.rs "
         "user/Patient.rs user/Consent.rs user/QuestionnaireResponse.rs user/Observation.rs "
         "user/Condition.rs user/Procedure.crs user/Coverage.rs user/Organization.rs "
         "user/Practitioner.rs user/PractitionerRole.rs user/HealthcareService.rus "
         "user/Location.rs user/Endpoint.rs user/Subscription.cruds user/CodeSystem.rs")

SPEC = AppSpec(
    name="workspace", path="/workspace", title="Provider workspace",
    summary="Work your organization's referral queue: accept, redirect or decline "
            "referrals, claim open referrals, record outcomes, keep your capacity current.",
    audience="staff of community organizations and behavioral-health providers who "
             "receive referrals",
    client_id=CLIENT_ID, scope=SCOPE,
    nav=(("workspace.queue", "Queue"), ("workspace.capacity", "Capacity"),
         ("workspace.numbers", "My numbers"), ("workspace.settings", "Notifications")))


def blueprint(config: WebConfig, sealer: Sealer) -> Blueprint:
    """The `/workspace` blueprint."""
    from fhir_server.web.workspace.views import add_views

    bp = app_blueprint(SPEC, config, sealer)
    add_views(bp)
    return bp
