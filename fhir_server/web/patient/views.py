"""The patient's pages: home (referrals and things to do), a Task (answer questions, make
contact, review material, or say no), sharing (Consents) and reminder choices."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, redirect, request, url_for
from flask_babel import get_locale
from flask_babel import gettext as _

from fhir_server.web.api import ApiError, FhirApi, entries
from fhir_server.web.apps import current, error_page, render, restore_form, signed_in
from fhir_server.web.forms import FormState, key_condition, key_identifier, new_key, valid_key
from fhir_server.web.i18n import N_
from fhir_server.web.names import Names
from fhir_server.web.patient import sharing as consents
from fhir_server.web.patient.questionnaire import (
    Form,
    form_for,
    questionnaire_response,
    read_answers,
)
from fhir_server.web.patient.referrals import contact_of, load_my_care
from fhir_server.web.patient.tasks import (
    SDC_TEMP,
    PatientTask,
    completed,
    declined,
    output,
    patient_task,
    update_entry,
)
from fhir_server.web.words import display_name
from fhir_server.workflow.canonical import SDOHCC_CODES
from mappers.care_recommendation import active_safety_flags
from mappers.reminder_preferences import CHANNELS, preferences, with_preferences
from mappers.screening import score_response
from mappers.screening_instruments import instrument_for_questionnaire

# Plain titles and the instructions the patient reads, by screening instrument.
PLAIN_TITLES = {"phq-9": N_("Questions about your mood (PHQ-9)"),
                "gad-7": N_("Questions about worry and stress (GAD-7)"),
                "phq-2": N_("Questions about your mood (PHQ-2)"),
                "gad-2": N_("Questions about worry (GAD-2)")}
TWO_WEEKS = N_("Over the last 2 weeks, how often have you been bothered by these problems?")


def language() -> str:
    return str(get_locale() or "en")


def me() -> str:
    """The signed-in patient's reference (`Patient/x`)."""
    return current().user.fhir_user


def for_patient(view: Callable[..., Response]) -> Callable[..., Response]:
    """A page for a signed-in patient (staff accounts are sent to their own app)."""

    @wraps(view)
    def inner(*args: Any, **kwargs: Any) -> Response:
        if not me().startswith("Patient/"):
            return error_page(403, _("This page is for patients"), _(
                "You signed in with a staff account. These pages show patients their own "
                "referrals."), _("Use the care team's app instead, or sign out and sign in "
                                 "with a patient account."))
        return view(*args, **kwargs)

    return signed_in(inner)


def not_found() -> Response:
    return error_page(404, _("Not found"), _("We could not find this page in your record."),
                      _("Go back to your home page and open it from there."))


def add_views(bp: Blueprint) -> None:
    """Register the patient's pages on the app's blueprint."""

    @bp.get("/")
    def home() -> Response:
        if not current().session.signed_in:
            return render("patient/welcome.html")
        return for_patient(_home)()

    def task_page(handler: Callable[[PatientTask], Response]) -> Callable[[str], Response]:
        """A page about one of the patient's own Tasks (404 for anyone else's)."""

        @wraps(handler)
        def view(task_id: str) -> Response:
            item = _own_task(task_id)
            return not_found() if item is None else handler(item)

        return for_patient(view)

    bp.add_url_rule("/tasks/<task_id>", "task", task_page(
        lambda item: _questionnaire(item) if item.kind == "questionnaire" else _finish(item)),
        methods=["GET", "POST"])
    bp.add_url_rule("/tasks/<task_id>/decline", "decline", task_page(_decline),
                    methods=["GET", "POST"])
    bp.add_url_rule("/tasks/<task_id>/done", "task_done", task_page(_done))

    @bp.get("/sharing")
    @for_patient
    def sharing() -> Response:
        notice = current().session.data.pop("notice", "")
        if notice:
            current().session.changed = True
        return render("patient/sharing.html", shares=consents.load_sharing(current().api, me()),
                      notice=notice)

    @bp.route("/sharing/<consent_id>/<action>", methods=["GET", "POST"])
    @for_patient
    def sharing_change(consent_id: str, action: str) -> Response:
        if action not in ("stop", "start"):
            return not_found()
        return _sharing_change(consent_id, action)

    @bp.route("/reminders", methods=["GET", "POST"])
    @for_patient
    def reminders() -> Response:
        return _reminders()


# -- home ------------------------------------------------------------------------------
def _home() -> Response:
    care = load_my_care(current().api, me())
    now = datetime.now(UTC)
    open_tasks = [t for t in care.tasks if t.open and not t.due.coming_up(now)]
    coming = [t for t in care.tasks if t.open and t.due.coming_up(now)]
    done = [t for t in care.tasks if not t.open]
    return render("patient/home.html", care=care, open_tasks=open_tasks, coming=coming,
                  done=done[:10], titles=_task_titles(current().api, care.tasks), now=now)


def _task_titles(api: FhirApi, tasks: list[PatientTask]) -> dict[str, str]:
    """A plain title for each Task, in the page language."""
    questionnaires = _questionnaires(api, {t.questionnaire for t in tasks if t.questionnaire})
    return {t.id: _title(t, questionnaires.get(t.questionnaire)) for t in tasks}


def _title(item: PatientTask, questionnaire: dict | None) -> str:
    if item.kind == "questionnaire":
        key = _instrument(questionnaire)
        if key in PLAIN_TITLES:
            return _(PLAIN_TITLES[key])
        if questionnaire:
            return _("Answer some questions: %(title)s",
                     title=form_for(questionnaire, language()).title)
        return _("Answer some questions")
    if item.kind == "contact":
        return _("Get in touch with a provider")
    if item.kind == "material":
        return _("Read something from your care team")
    return str(item.task.get("description") or _("A message from your care team"))


def _instrument(questionnaire: dict | None) -> str:
    """`phq-9`, `gad-7`, ... for our screening instruments, else ''."""
    found = instrument_for_questionnaire(questionnaire) if questionnaire else None
    return found.key if found else ""


def _questionnaires(api: FhirApi, canonicals: set[str]) -> dict[str, dict]:
    """The Questionnaires named by canonical (`url|version`) or reference, one batch."""
    wanted = sorted(c for c in canonicals if c)
    urls = []
    for canonical in wanted:
        if canonical.startswith("Questionnaire/"):
            urls.append(canonical)
            continue
        url, _sep, version = canonical.partition("|")
        params = [("url", url)] + ([("version", version)] if version else [])
        urls.append("Questionnaire?" + urlencode(params))
    out: dict[str, dict] = {}
    for canonical, answer in zip(wanted, api.batch(urls), strict=True):
        if isinstance(answer, ApiError):
            continue
        found = answer if answer.get("resourceType") == "Questionnaire" else next(
            iter(entries(answer)), None)
        if found:
            out[canonical] = found
    return out


# -- Tasks -----------------------------------------------------------------------------
def _own_task(task_id: str) -> PatientTask | None:
    """The patient's own Task (None when it is not theirs or not visible)."""
    try:
        task = current().api.read(f"Task/{task_id}")
    except ApiError as exc:
        if exc.status in (404, 410):
            return None
        raise
    if (task.get("owner") or {}).get("reference") != me():
        return None
    return patient_task(task)


def _intro(questionnaire: dict) -> str:
    return _(TWO_WEEKS) if _instrument(questionnaire) else ""


def _questionnaire(item: PatientTask) -> Response:
    api = current().api
    questionnaire = _questionnaires(api, {item.questionnaire}).get(item.questionnaire)
    if questionnaire is None:
        return error_page(404, _("These questions are not available"), _(
            "We could not find the questions your care team asked you to answer."),
            _("Tell your care team. They can send them again."))
    title = _title(item, questionnaire)
    form = form_for(questionnaire, language(), title)
    if not item.open:
        return _closed(item, title)
    if request.method == "GET":
        state = restore_form()
        if not state.values:
            state.values = {"idempotency_key": [new_key()], "version": [item.version]}
        return _questionnaire_page(item, form, questionnaire, state)
    state = FormState.posted(request.form)
    answers, problems = read_answers(form, state.values)
    for field, problem in problems.items():
        state.add(field, _("Please answer this question.") if problem == "required"
                  else _("Please choose one of the answers."))
    key = valid_key(state.value("idempotency_key"))
    if key is None:
        state.add(None, _("This form is missing its key. Reload the page and answer again."))
    if state.has_errors or key is None:
        return _questionnaire_page(item, form, questionnaire, state, 400)
    response = questionnaire_response(
        questionnaire, form, answers, patient=me(), authored=_now(),
        identifier=key_identifier(key), based_on=item.task.get("basedOn"),
        language=language())
    urn = f"urn:uuid:{key}"
    finished = completed(item.task, [output(SDC_TEMP, "questionnaire-response", urn)])
    bundle = [{"fullUrl": urn, "resource": response, "request": {
        "method": "POST", "url": "QuestionnaireResponse", "ifNoneExist": key_condition(key)}},
        update_entry(finished, state.value("version") or item.version)]
    try:
        api.transaction(bundle)
    except ApiError as exc:
        if exc.status == 401:
            raise
        if exc.status == 412 and _already_answered(item.id):
            return redirect(url_for(".task_done", task_id=item.id), 303)
        state.add(None, _("Your answers could not be saved: %(why)s", why=exc.message)
                  if exc.status != 412 else _("This task changed since you opened it. "
                                               "Reload the page and answer again."))
        return _questionnaire_page(item, form, questionnaire, state, 409 if exc.status == 412
                                   else 400)
    return redirect(url_for(".task_done", task_id=item.id), 303)


def _already_answered(task_id: str) -> bool:
    fresh = _own_task(task_id)
    return fresh is not None and fresh.status == "completed"


def _questionnaire_page(item: PatientTask, form: Form, questionnaire: dict,
                        state: FormState, status: int = 200) -> Response:
    return render("patient/questionnaire.html", status=status, item=item, form=form,
                  intro=_intro(questionnaire), state=state,
                  copyright=questionnaire.get("copyright") or "")


def _contacts(api: FhirApi, refs: list[str]) -> list:
    names = Names(api)
    for ref in refs:
        names.want(ref)
    names.fetch()
    for resource in list(names.resources.values()):
        for ref in (resource.get("location") or [])[:1]:
            names.want(ref)
    names.fetch()
    out = []
    for ref in refs:
        resource = names.get(ref)
        if resource:
            location = names.get(next(iter(resource.get("location") or []), None))
            out.append((ref, contact_of(resource, location)))
    return out


def _materials(api: FhirApi, refs: list[str]) -> list[dict]:
    out = []
    for ref, answer in zip(refs, api.batch(refs), strict=True):
        if isinstance(answer, ApiError):
            continue
        for content in answer.get("content") or []:
            attachment = content.get("attachment") or {}
            text = ""
            if attachment.get("data") and str(attachment.get("contentType", "")).startswith(
                    "text/plain"):
                import base64

                text = base64.b64decode(attachment["data"]).decode("utf-8", "replace")
            out.append({"ref": ref, "title": attachment.get("title") or answer.get(
                "description") or _("Material from your care team"),
                "url": attachment.get("url") if str(attachment.get("url", "")).startswith(
                    ("https://", "http://")) else "", "text": text})
    return out


def _finish(item: PatientTask) -> Response:
    """Make contact, review material, general information: read, then say it is done."""
    api = current().api
    contacts = _contacts(api, item.contacts) if item.kind == "contact" else []
    materials = _materials(api, item.materials) if item.kind == "material" else []
    title = _title(item, None)
    if not item.open:
        return _closed(item, title)
    state = _task_form(item)
    if request.method == "POST":
        outputs = []
        chosen = state.value("contact")
        if item.kind == "contact":
            if chosen not in item.contacts:
                chosen = item.contacts[0] if len(item.contacts) == 1 else ""
            if not chosen:
                state.add("contact", _("Choose whom you got in touch with."))
            else:
                outputs.append(output(SDOHCC_CODES, "chosen-contact", chosen))
        if not state.has_errors:
            done = _save(item, completed(item.task, outputs), state)
            if done is not None:
                return done
    return render("patient/task.html", status=400 if state.has_errors else 200, item=item,
                  title=title, contacts=contacts, materials=materials, state=state)


def _save(item: PatientTask, task: dict, state: FormState) -> Response | None:
    """Store the finished Task; the done page, or None with the problem in `state`."""
    try:
        current().api.transaction([update_entry(task, state.value("version") or item.version)])
    except ApiError as exc:
        if exc.status == 401:
            raise
        if exc.status == 412:
            fresh = _own_task(item.id)
            if fresh is not None and fresh.status == task.get("status"):
                return redirect(url_for(".task_done", task_id=item.id), 303)
            state.add(None, _("This task changed since you opened it. Reload the page and "
                              "try again."))
        else:
            state.add(None, _("This could not be saved: %(why)s", why=exc.message))
        return None
    return redirect(url_for(".task_done", task_id=item.id), 303)


def _closed(item: PatientTask, title: str) -> Response:
    """A Task that is no longer open: a form sent again (double click, back button) lands on
    the page the first one led to."""
    if request.method == "POST":
        return redirect(url_for(".task_done", task_id=item.id), 303)
    return render("patient/task_closed.html", item=item, title=title)


def _task_form(item: PatientTask) -> FormState:
    """The submitted form, or a fresh one carrying the Task's version."""
    if request.method == "POST":
        return FormState.posted(request.form)
    return FormState(values={"version": [item.version]})


def _decline(item: PatientTask) -> Response:
    if not item.open:
        return _closed(item, _title(item, None))
    state = _task_form(item)
    if request.method == "POST":
        reason = state.value("reason").strip() or _("The patient chose not to do this.")
        done = _save(item, declined(item.task, reason), state)
        if done is not None:
            return done
    return render("patient/decline.html", status=400 if state.has_errors else 200, item=item,
                  title=_title(item, None), state=state)


def _done(item: PatientTask) -> Response:
    """After a Task: thanks, and the crisis numbers first when the answers call for it."""
    api = current().api
    safety = None
    if item.kind == "questionnaire" and item.status == "completed":
        safety = _safety_after(api, item)
    return render("patient/done.html", item=item, title=_title(item, None), safety=safety)


def _safety_after(api: FhirApi, item: PatientTask) -> dict | None:
    """Whether the answers just given are positive on the self-harm question (the server's
    own scoring), and whether the server raised the safety flag for the care team."""
    refs = [(o.get("valueReference") or {}).get("reference") for o in item.task.get(
        "output") or []]
    response_ref = next((r for r in refs if r and r.startswith("QuestionnaireResponse/")),
                        None)
    if response_ref is None:
        return None
    qr_url = response_ref
    flag_url = "Flag?" + urlencode([("patient", me())])
    found = api.batch([qr_url, flag_url])
    response = found[0] if not isinstance(found[0], ApiError) else None
    flags = entries(found[1]) if not isinstance(found[1], ApiError) else []
    if response is None:
        return None
    questionnaire = _questionnaires(api, {str(response.get("questionnaire") or "")}).get(
        str(response.get("questionnaire") or ""))
    result = score_response(questionnaire, response)
    if not result.safety_flag:
        return None
    return {"care_team_told": bool(active_safety_flags(flags))}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- sharing ---------------------------------------------------------------------------
def _sharing_change(consent_id: str, action: str) -> Response:
    api = current().api
    shares = consents.load_sharing(api, me())
    share = next((s for s in shares if s.consent_id == consent_id), None)
    if share is None:
        return not_found()
    state = FormState(values={"version": [share.version]})
    if request.method == "POST":
        state = FormState.posted(request.form)
        try:
            consents.set_sharing(api, share.consent, action == "start",
                                state.value("version") or share.version)
        except ApiError as exc:
            if exc.status == 401:
                raise
            state.add(None, _("This could not be saved: %(why)s", why=exc.message)
                      if exc.status != 412 else _("This changed since you opened it. Go back "
                                                   "to Sharing and try again."))
        else:
            current().session.data["notice"] = "stopped" if action == "stop" else "started"
            current().session.changed = True
            return redirect(url_for(".sharing"), 303)
    who = ", ".join(r.name for r in share.recipients if r.name) or _("the provider")
    return render("patient/sharing_change.html", status=400 if state.has_errors else 200,
                  share=share, action=action, state=state, who=who)


# -- reminders -------------------------------------------------------------------------
def _reminders() -> Response:
    api = current().api
    patient = api.read(me())
    prefs = preferences(patient)
    state = FormState(values={c: ["yes"] for c in CHANNELS if c not in prefs.opted_out})
    state.values["language"] = [prefs.language if prefs.language in ("en", "es") else
                                language()]
    saved = False
    if request.method == "POST":
        state = FormState.posted(request.form)
        opted_out = {c for c in CHANNELS if state.value(c) != "yes"}
        chosen = state.value("language")
        updated = with_preferences(patient, opted_out, chosen if chosen in ("en", "es")
                                   else None)
        try:
            patient = api.update(updated, f'W/"{patient["meta"]["versionId"]}"')
        except ApiError as exc:
            if exc.status == 401:
                raise
            state.add(None, _("Your choices could not be saved: %(why)s", why=exc.message))
        else:
            prefs, saved = preferences(patient), True
            current().user.language = prefs.language
            current().session.changed = True
    return render("patient/reminders.html", status=400 if state.has_errors else 200,
                  prefs=prefs, state=state, saved=saved, name=display_name(patient))
