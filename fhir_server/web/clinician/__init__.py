"""The care team's app (`/app`): launched from an EHR (or signed in to directly by a care
coordinator), it shows the patient's screening and safety state, recommends care, matches
providers, sends the referral in one transaction and tracks it to its outcome."""

from __future__ import annotations

from flask import Blueprint

from fhir_server.web.apps import AppSpec, app_blueprint
from fhir_server.web.config import DEFAULT_CLIENT_ID, WebConfig
from fhir_server.web.sealing import Sealer

# What the app may do at its API server for the signed-in user (the policy narrows it to
# what the user's organization may see).
SCOPE = ("openid fhirUser online_access user/Patient.crs user/Observation.rs "
         "user/QuestionnaireResponse.crs user/Questionnaire.rs user/Flag.rs user/Task.crus "
         "user/ServiceRequest.crus user/Consent.crs user/Procedure.rs user/Condition.rs "
         "user/Coverage.rs user/Organization.rs user/Practitioner.rs user/PractitionerRole.rs "
         "user/HealthcareService.rs user/Location.rs user/Endpoint.rs")

SPEC = AppSpec(
    name="clinician", path="/app", title="Care team",
    summary="See a patient's screening and safety alerts, get a recommended level of care, "
            "find a provider who fits, send the referral and follow it to its outcome.",
    audience="clinicians and care coordinators of referring clinics",
    client_id=DEFAULT_CLIENT_ID, scope=SCOPE,
    nav=(("clinician.home", "Patients"), ("clinician.tracker", "Referrals"),
         ("clinician.attention", "Needs attention")),
    patient_home="clinician.summary")


def blueprint(config: WebConfig, sealer: Sealer) -> Blueprint:
    """The `/app` blueprint."""
    from fhir_server.web.clinician.launch import add_launch_views, finish_ehr_launch
    from fhir_server.web.clinician.tracker import add_tracker_views
    from fhir_server.web.clinician.views import add_patient_views

    bp = app_blueprint(SPEC, config, sealer, ehr_callback=finish_ehr_launch)
    add_launch_views(bp, config)
    add_patient_views(bp)
    add_tracker_views(bp)
    return bp
