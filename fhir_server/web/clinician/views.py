"""The clinician app's patient pages: find a patient, the summary, recommended care, matched
providers and sending the referral."""

from __future__ import annotations

from flask import Blueprint, Response, redirect, request, url_for

from fhir_server.web import words
from fhir_server.web.api import ApiError, entries
from fhir_server.web.apps import current, render, restore_form, signed_in
from fhir_server.web.clinician import bundle as referral_bundle
from fhir_server.web.clinician.care import (
    RADII,
    find_providers,
    match_parameters,
    recommendation,
)
from fhir_server.web.clinician.launch import copy_to_ehr, ehr_can_write
from fhir_server.web.clinician.summary import load_summary
from fhir_server.web.forms import FieldMap, FormState, new_key, valid_key
from mappers.directory_model import REFERRAL_DISPLAY

# Where the server's issues about a referral transaction belong on the send form.
SEND_FIELDS = FieldMap((
    (r"(ServiceRequest|Task)\.priority|entry\[\d+\]\.resource\.priority", "priority"),
    (r"ServiceRequest\.note|resource\.note", "reason"),
    (r"extension|override", "override_reason"),
    (r"Consent", "consent"),
    (r"Task\.owner|performer|resource\.owner", "service"),
))
PRIORITY_OPTIONS = [(p, words.priority_words(p)) for p in referral_bundle.PRIORITIES]


def add_patient_views(bp: Blueprint) -> None:
    """Register the patient pages on the app's blueprint."""

    @bp.get("/")
    def home() -> Response:
        here = current()
        if not here.session.signed_in:
            return render("clinician/welcome.html")
        return render("clinician/home.html", q="", patients=None)

    @bp.get("/patients")
    @signed_in
    def patients() -> Response:
        q = request.args.get("q", "").strip()[:100]
        found = None
        if q:
            api = current().api
            key = "identifier" if any(ch.isdigit() for ch in q) else "name"
            found = entries(api.search("Patient", [(key, q), ("_count", "20")]))
            if not found and key == "identifier":
                found = entries(api.search("Patient", [("name", q), ("_count", "20")]))
        rows = [{"id": p.get("id"), "name": words.human_name(p),
                 "born": words.day(p.get("birthDate")),
                 "age": words.age_on(p.get("birthDate")),
                 "ids": ", ".join(v for _, v in words.identifier_rows(p))}
                for p in found or []]
        return render("clinician/home.html", q=q, patients=rows)

    @bp.get("/patients/<patient_id>")
    @signed_in
    def summary(patient_id: str) -> Response:
        found = load_summary(current().api, patient_id)
        return render("clinician/summary.html", s=found, patient_id=patient_id)

    @bp.get("/patients/<patient_id>/care")
    @signed_in
    def care(patient_id: str) -> Response:
        api = current().api
        patient = api.read(f"Patient/{patient_id}")
        rec = recommendation(api, patient_id)
        return render("clinician/care.html", patient=patient, rec=rec, patient_id=patient_id,
                      name=words.human_name(patient))

    @bp.get("/patients/<patient_id>/providers")
    @signed_in
    def providers(patient_id: str) -> Response:
        api = current().api
        patient = api.read(f"Patient/{patient_id}")
        rec = recommendation(api, patient_id)
        modality = request.args.get("modality", "")
        radius = request.args.get("radius", "50")
        problem, result = "", None
        if rec.refers or rec.services:
            try:
                result = find_providers(api, match_parameters(patient, rec, modality, radius))
            except ApiError as exc:
                if exc.status in (401, 403, 404):
                    raise
                problem = exc.message
        return render("clinician/providers.html", patient=patient, rec=rec, result=result,
                      problem=problem, patient_id=patient_id, modality=modality,
                      radius=radius, radii=RADII, name=words.human_name(patient))

    @bp.route("/patients/<patient_id>/send", methods=["GET", "POST"])
    @signed_in
    def send(patient_id: str) -> Response:
        return _send(patient_id)


MAX_OFFERS = 5  # providers an open referral may be offered to at once


def offered_ids(values: list[str]) -> list[str]:
    """The distinct HealthcareService ids a clinician ticked for an open referral."""
    return list(dict.fromkeys(v.strip() for v in values if v.strip()))[:MAX_OFFERS]


def _send_context(patient_id: str, service_id: str, offers: list[str] | None = None) -> dict:
    """What the send page needs. With two or more `offers` (HealthcareService ids) the
    referral is an open one: offered to their organizations, the first to accept owns it."""
    api = current().api
    summary = load_summary(api, patient_id)
    offers = offers or []
    if len(offers) == 1:
        service_id, offers = offers[0], []
    service = api.read(f"HealthcareService/{service_id}") if service_id and not offers \
        else None
    offered = []
    for answer in api.batch([f"HealthcareService/{i}" for i in offers]):
        if isinstance(answer, ApiError):
            raise answer
        offered.append(answer)
    names = current().names()
    for chosen in [service, *offered]:
        if chosen:
            names.want(chosen.get("providedBy"))
    names.fetch()
    rec = recommendation(api, patient_id)
    link = current().session.ehr
    return {"s": summary, "service": service, "rec": rec, "patient_id": patient_id,
            "organization": names.name((service or {}).get("providedBy"), ""),
            "offers": [{"service": o, "organization": names.name(o.get("providedBy"), "")}
                       for o in offered],
            "ehr": link if link and link.get("hub_patient") == patient_id else None,
            "ehr_can_write": ehr_can_write(link)}


def _send(patient_id: str) -> Response:
    here = current()
    service_id = (request.values.get("service") or "").strip()
    ctx = _send_context(patient_id, service_id, offered_ids(request.values.getlist("offer")))
    state = restore_form() if request.method == "GET" else FormState(
        values={k: request.form.getlist(k) for k in request.form if k != "csrf"})
    if request.method == "GET":
        if not state.values:
            state.values = {"idempotency_key": [new_key()],
                            "priority": [ctx["rec"].priority or "routine"],
                            "reason": [_default_reason(ctx)]}
        return _send_page(ctx, state)
    if ctx["service"] is None and not ctx["offers"]:
        state.add("service", "Choose a provider first.")
        return _send_page(ctx, state, 400)
    referral, problems = _referral_from_form(ctx, state)
    if problems:
        return _send_page(ctx, state, 400)
    try:
        entries_ = referral_bundle.referral_entries(referral)
    except ValueError as exc:
        state.add("service", str(exc))
        return _send_page(ctx, state, 400)
    try:
        answer = here.api.transaction(entries_)
    except ApiError as exc:
        if exc.status in (401,):
            raise
        SEND_FIELDS.place_error(state, exc)
        return _send_page(ctx, state, 422 if exc.status == 422 else 400)
    task = referral_bundle.created(answer, "Task") or {}
    sr = referral_bundle.created(answer, "ServiceRequest") or {}
    sent = {"task": task.get("id"), "chosen": referral.priority,
            "stored": sr.get("priority"), "key": referral.key}
    link = here.session.ehr
    if link and link.get("hub_patient") == patient_id and state.value("ehr_copy") == "yes" \
            and ehr_can_write(link):
        sent["ehr"] = copy_to_ehr(link, sr, referral.key)
    here.session.data["sent"] = sent
    here.session.changed = True
    return redirect(url_for(".referral", task_id=task.get("id")), 303)


def _default_reason(ctx: dict) -> str:
    s = ctx["s"]
    parts = []
    for series in s.series:
        if series.latest:
            short = series.instrument.title.split("(")[-1].rstrip(")")
            parts.append(f"{short} {series.latest.value} ({series.latest.band.split(' (')[0]}"
                         f", {words.day(series.latest.when.isoformat())})")
    if s.safety:
        parts.append(f"PHQ-9 item 9 answered '{s.safety.answer}'")
    level = ctx["rec"].level_words
    return ("; ".join(parts) + (f". Recommended: {level}." if level else ".")) if parts else ""


def _referral_from_form(ctx: dict, state: FormState
                        ) -> tuple[referral_bundle.Referral | None, bool]:
    here = current()
    key = valid_key(state.value("idempotency_key"))
    if key is None:
        state.add(None, "The form is missing its key; reload the page and send it again.")
    reason = state.value("reason").strip()
    if not reason:
        state.add("reason", "Say why you are referring the patient.")
    elif len(reason) > referral_bundle.MAX_REASON:
        state.add("reason", f"Keep the reason under {referral_bundle.MAX_REASON} characters.")
    requester = here.user.role or here.user.organization
    if not requester:
        state.add(None, "Your account is not linked to a clinic (no PractitionerRole with an "
                        "organization), so a referral cannot name who sent it. Ask your "
                        "administrator.")
    consent = state.value("consent") == "yes"
    if consent and not here.user.organization:
        state.add("consent", "Consent needs your clinic's name; your account has none.")
    service = ctx["service"] or ctx["offers"][0]["service"]
    code = next(((c["code"], c.get("display") or REFERRAL_DISPLAY.get(c["code"], c["code"]))
                 for concept in service.get("type") or [] for c in concept.get("coding") or []
                 if c.get("system") == referral_bundle.SNOMED and c.get("code")),
                referral_bundle.DEFAULT_SERVICE)
    if ctx["offers"]:  # an open referral: no owner, the organizations as candidates
        routing = referral_bundle.Routing(candidates=tuple(dict.fromkeys(
            (o["service"].get("providedBy") or {}).get("reference") for o in ctx["offers"]
            if (o["service"].get("providedBy") or {}).get("reference"))))
    else:
        routing = referral_bundle.Routing(
            owner=(service.get("providedBy") or {}).get("reference"),
            service=f"HealthcareService/{service['id']}")
    if state.has_errors or key is None:
        return None, True
    supporting = [a.response for a in ctx["s"].answers]
    return referral_bundle.Referral(
        key=key, patient=ctx["s"].patient, requester=requester,
        organization=here.user.organization,
        routing=routing, service_code=code, priority=state.value("priority") or "routine",
        reason=reason, supporting=supporting, consent=consent,
        override_reason=state.value("override_reason")), False


def _send_page(ctx: dict, state: FormState, status: int = 200) -> Response:
    return render("clinician/send.html", status=status, state=state,
                  priorities=PRIORITY_OPTIONS, **ctx)
