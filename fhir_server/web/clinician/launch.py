"""SMART EHR launch of the clinician app (`/app/launch?iss=…&launch=…`, callback
`/app/callback`: the URLs EHRs register).

* `iss` is this app's own API server (this server acting as the EHR): the launch goes to its
  authorization server, and the token's patient opens that patient's summary.
* `iss` is an external EHR on the allow-list: the app runs the EHR launch there (PKCE S256,
  `aud=iss`), reads the patient and latest PHQ-9/GAD-7 from the EHR, then asks the user to
  sign in to the referral network too. The EHR patient is brought into the network
  (conditional create on its identifiers) and referred from there; the referral's
  ServiceRequest is copied back to the EHR when the EHR granted write access.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, redirect, request, url_for

from fhir_server.web import smart, words
from fhir_server.web.api import ApiError, FhirApi, ServerDown, entries
from fhir_server.web.apps import (
    app_root,
    current,
    error_page,
    hub_base,
    render,
    signed_in,
    start_sign_in,
)
from fhir_server.web.config import WebConfig, normalise_base
from fhir_server.web.forms import FormState, key_identifier, new_key, valid_key
from fhir_server.web.smart import LaunchError, Pending
from fhir_server.web.transport import OverHttp

LOINC = "http://loinc.org"
TOTALS = {"44261-6": "PHQ-9", "70274-6": "GAD-7"}
MAX_LAUNCH_LEN = 1024
PATIENT_FIELDS = ("identifier", "name", "gender", "birthDate", "telecom", "address",
                  "communication")


def add_launch_views(bp: Blueprint, config: WebConfig) -> None:
    """`/launch`, the EHR patient page and its import into the network."""

    @bp.get("/launch")
    def launch() -> Response:
        iss = request.args.get("iss", "").strip()
        handle = request.args.get("launch", "").strip()
        if not iss:
            raise LaunchError(400, "The launch has no iss: start this app from your EHR.")
        smart.check_absolute_http(iss, "iss")
        if not handle:
            raise LaunchError(400, "The launch has no launch parameter: start this app from "
                                   "your EHR.")
        if len(handle) > MAX_LAUNCH_LEN:
            raise LaunchError(400, "The launch parameter is too long.")
        if normalise_base(iss) == normalise_base(hub_base(config)):
            return start_sign_in(current().spec.path + "/", launch=handle)
        if not config.iss_allowed(iss):
            raise LaunchError(400, f"{iss} is not an EHR this app accepts launches from.")
        transport = OverHttp(config.timeout)
        endpoints = smart.discover(transport, iss)
        redirect_uri = config.ehr_redirect_uri or f"{app_root(config)}/app/callback"
        url, pending = smart.begin(endpoints, "ehr", config.client_id, redirect_uri,
                                   "launch " + config.ehr_scope, launch=handle,
                                   return_to="/app/ehr")
        response = redirect(url, 302)
        current().jar.save_pending(response, pending, {}, request.is_secure)
        return response

    @bp.get("/ehr")
    @signed_in
    def ehr_patient() -> Response:
        return _ehr_page(FormState(values={"idempotency_key": [new_key()]}))

    @bp.post("/ehr")
    @signed_in
    def ehr_import() -> Response:
        here = current()
        link = here.session.ehr
        state = FormState(values={k: request.form.getlist(k) for k in request.form})
        key = valid_key(state.value("idempotency_key"))
        if not link or key is None:
            state.add(None, "Start the app again from your EHR.")
            return _ehr_page(state, 400)
        patient = _network_copy(link["patient"], here.user.organization)
        condition = _condition(patient)
        if condition is None:
            state.add(None, "The EHR gave this patient no identifier, so the patient cannot "
                            "be matched safely in the network.")
            return _ehr_page(state, 400)
        try:
            stored = here.api.create(patient, if_none_exist=condition)
        except ApiError as exc:
            if exc.status == 401:
                raise
            state.add(None, exc.message)
            return _ehr_page(state, exc.status if exc.status < 500 else 502)
        link["hub_patient"] = stored.get("id")
        here.session.changed = True
        return redirect(url_for(".summary", patient_id=stored.get("id")), 303)


def finish_ehr_launch(pending: Pending, form: dict[str, Any]) -> Response:
    """The EHR's callback: tokens, the patient and latest scores, then the network sign-in."""
    here = current()
    if request.args.get("error"):
        detail = request.args.get("error_description") or request.args["error"]
        raise LaunchError(400, f"The EHR did not authorize the app: {detail}", pending.iss)
    config = here.config
    transport = OverHttp(config.timeout)
    tokens, body = smart.exchange(transport, pending, request.args.get("code", ""),
                                  f"the EHR at {pending.iss}", config.ehr_client_secret)
    if not tokens.patient:
        raise LaunchError(502, "The EHR granted no patient context for this launch",
                          pending.iss)
    ehr = FhirApi(pending.iss, transport, tokens.access_token)
    try:
        patient = ehr.read(f"Patient/{tokens.patient}")
        scores = _latest_scores(ehr, tokens.patient)
    except ApiError as exc:
        raise LaunchError(502, f"Reading from the EHR failed (HTTP {exc.status}: "
                               f"{exc.message})", pending.iss) from None
    except ServerDown as exc:
        raise LaunchError(502, f"The EHR at {pending.iss} stopped answering ({exc.why})",
                          pending.iss) from None
    if patient.get("resourceType") != "Patient":
        raise LaunchError(502, "The EHR returned something other than the Patient",
                          pending.iss)
    requester = ""
    if body.get("id_token"):
        claims = smart.verified_claims(transport, pending, str(body["id_token"]),
                                       f"the EHR at {pending.iss}")
        requester = smart.relative_fhir_user(str(claims.get("fhirUser") or ""), pending.iss)
    here.session.ehr = {"iss": pending.iss, "tokens": tokens.to_json(),
                        "patient": {k: patient[k] for k in ("id", *PATIENT_FIELDS)
                                    if k in patient},
                        "scores": scores, "requester": requester}
    here.session.changed = True
    if not here.session.signed_in:
        return start_sign_in("/app/ehr")
    return redirect("/app/ehr", 303)


def _latest_scores(ehr: FhirApi, patient_id: str) -> list[dict]:
    out = []
    for code, title in TOTALS.items():
        bundle = ehr.search("Observation", {"patient": patient_id, "code": f"{LOINC}|{code}",
                                            "_sort": "-date", "_count": "1"})
        found = entries(bundle)
        if not found:
            continue
        obs = found[0]
        value = obs.get("valueInteger", (obs.get("valueQuantity") or {}).get("value"))
        out.append({"title": title, "value": value, "id": obs.get("id"),
                    "when": obs.get("effectiveDateTime") or obs.get("issued") or "",
                    "band": words.concept_text((obs.get("interpretation") or [{}])[0])})
    return out


def _network_copy(patient: dict, organization: str) -> dict:
    copy = {"resourceType": "Patient", **{k: patient[k] for k in PATIENT_FIELDS
                                          if k in patient}}
    if organization:
        copy["managingOrganization"] = {"reference": organization}
    return copy


def _condition(patient: dict) -> str | None:
    from fhir_server.web.clinician.bundle import patient_condition

    return patient_condition(patient)


def _ehr_page(state: FormState, status: int = 200) -> Response:
    here = current()
    link = here.session.ehr
    if not link:
        return error_page(400, "No EHR launch", "This page shows the patient an EHR launched "
                          "the app for, and there is none in this session.",
                          "Start the app again from your EHR.")
    patient = link["patient"]
    in_network = None
    condition = _condition(patient)
    if condition:
        system_value = condition.split("=", 1)[1]
        found = entries(here.api.search("Patient", {"identifier": system_value}))
        in_network = found[0] if found else None
    return render("clinician/ehr.html", status=status, link=link, patient=patient,
                  name=words.human_name(patient), state=state, in_network=in_network,
                  can_write=ehr_can_write(link))


def ehr_can_write(link: dict | None) -> bool:
    """Whether the EHR granted this app the right to create ServiceRequests."""
    if not link:
        return False
    for scope in (link.get("tokens") or {}).get("scope", "").split():
        if scope.split("?")[0] in ("patient/ServiceRequest.write", "patient/ServiceRequest.*",
                                   "user/ServiceRequest.write", "user/ServiceRequest.*"):
            return True
        kind, _, letters = scope.split("?")[0].partition(".")
        if kind.endswith("/ServiceRequest") and "c" in letters and letters.isalpha():
            return True
    return False


def copy_to_ehr(link: dict, sr: dict, key: str) -> str:
    """Write a copy of the referral's ServiceRequest to the launching EHR, with the same
    identifier; returns what to tell the user."""
    tokens = smart.Tokens.from_json(link["tokens"])
    if tokens.expired(0):
        return (f"The copy to the EHR ({link['iss']}) was not written: the EHR session "
                "expired. Start the app again from the EHR to write it.")
    copy = {k: sr[k] for k in ("status", "intent", "priority", "category", "code",
                               "authoredOn", "note") if k in sr}
    copy.update({"resourceType": "ServiceRequest", "identifier": [key_identifier(key)],
                 "subject": {"reference": f"Patient/{link['patient']['id']}"}})
    if link.get("requester"):
        copy["requester"] = {"reference": link["requester"]}
    ehr = FhirApi(link["iss"], OverHttp(current().config.timeout), tokens.access_token)
    condition = "identifier=" + "|".join(key_identifier(key).values())
    try:
        try:  # conditional, so that sending the form again writes no second copy
            stored = ehr.create(copy, if_none_exist=condition)
        except ApiError as exc:
            if exc.status != 403:  # an EHR that grants create without search
                raise
            stored = ehr.create(copy)
    except (ApiError, ServerDown) as exc:
        return (f"The referral was sent, but the copy to the EHR ({link['iss']}) failed: "
                f"{exc}. Add it to the EHR by hand, or start the app again from the EHR.")
    return f"A copy was written to the EHR ({link['iss']}) as ServiceRequest/{stored.get('id')}."

