"""The patient's pages (`/me`): a patient signs in with their own account (SMART standalone
launch, `patient/` scopes bound to their Patient) and sees their referrals in plain words,
what to do next and how to reach the provider, answers the questions their care team sends
(Tasks for the patient), chooses who may see their answers (Consent) and how to be reminded.
English and Spanish; crisis numbers on every page."""

from __future__ import annotations

from flask import Blueprint

from fhir_server.web.apps import AppSpec, app_blueprint
from fhir_server.web.config import WebConfig
from fhir_server.web.i18n import N_
from fhir_server.web.sealing import Sealer

CLIENT_ID = "mh-referral-me"
# Read what concerns the patient, answer questionnaires, finish their Tasks, withdraw a
# consent and set reminder choices on their own record; directory data to reach providers.
SCOPE = ("launch/patient openid fhirUser online_access patient/Patient.ru "
         "patient/Task.rus patient/ServiceRequest.rs patient/QuestionnaireResponse.crs "
         "patient/Questionnaire.rs patient/Observation.rs patient/Flag.rs "
         "patient/Consent.rus patient/Procedure.rs patient/DocumentReference.rs "
         "patient/Organization.rs patient/HealthcareService.rs patient/Location.rs "
         "patient/PractitionerRole.rs patient/Practitioner.rs")

SPEC = AppSpec(
    name="patient", path="/me", title=N_("My care"),
    summary="For patients: see your referrals and what to do next, answer the questions "
            "your care team sends, choose who can see your answers, and get reminders.",
    audience="patients with an account (invitation from their care team)",
    client_id=CLIENT_ID, scope=SCOPE,
    nav=(("patient.home", N_("Home")), ("patient.sharing", N_("Sharing")),
         ("patient.reminders", N_("Reminders"))),
    languages=("en", "es"))


def blueprint(config: WebConfig, sealer: Sealer) -> Blueprint:
    """The `/me` blueprint."""
    from fhir_server.web.patient.views import add_views

    bp = app_blueprint(SPEC, config, sealer)
    add_views(bp)
    return bp
