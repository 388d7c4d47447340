"""Invitations: how a patient gets an account without anyone typing a password for them.

`python -m fhir_server users invite --patient Patient/ID` makes a one-time code (256 random
bits, stored as SHA-256, valid `--days`, default 7) and e-mails a link with it to the address
on the patient's record (`Patient.telecom` email), in the patient's language. The link opens
`/auth/join?code=...`: the patient proves it is them with their date of birth (as on their
record) and chooses a username and password. Five wrong dates lock the invitation. On
success the account exists (`users add --patient` equivalent), the code is spent, the
patient is signed in at the authorization server and sent to their pages (`/me/`).
The e-mail says nothing about the patient's health: only that there is an account to make.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, redirect, render_template, request

from fhir_server.auth import authorize as az
from fhir_server.auth import invitation_store as store
from fhir_server.auth.registry import check_new_credentials, get_user, save_user
from fhir_server.auth.server import SESSION_COOKIE
from fhir_server.auth.tokens import digest, new_secret
from fhir_server.i18n import LANGUAGE_NAMES, supported, translations
from fhir_server.storage.db import Database
from fhir_server.storage.repository import Repository
from mappers.reminder_preferences import preferences
from subscriptions.channels import SmtpSettings, send_mail, text_email

DEFAULT_DAYS = 7
MAX_FAILURES = 5
JOIN_PATH = "/auth/join"


class InvitationError(ValueError):
    """The invitation cannot be made (no such patient, no e-mail address on file)."""


@dataclass(frozen=True)
class Invitation:
    code: str  # the secret, known only to the link
    patient: str
    email: str
    language: str
    expires: int


def _patient(db: Database, patient_ref: str) -> dict | None:
    res_type, _, res_id = patient_ref.partition("/")
    if res_type != "Patient" or not res_id:
        return None
    with db.read() as conn:
        stored = Repository(conn).read("Patient", res_id)
    return stored.resource() if stored is not None and not stored.deleted else None


def create_invitation(db: Database, patient_ref: str, days: int = DEFAULT_DAYS,
                      now: int | None = None) -> Invitation:
    """A new invitation for the patient (InvitationError when it cannot be sent)."""
    patient = _patient(db, patient_ref)
    if patient is None:
        raise InvitationError(f"{patient_ref} is not stored on this server")
    prefs = preferences(patient)
    if not prefs.email:
        raise InvitationError(f"{patient_ref} has no e-mail address on file "
                              "(Patient.telecom with system email)")
    if not 1 <= days <= 30:
        raise InvitationError("an invitation is valid for 1 to 30 days")
    now = int(time.time()) if now is None else now
    code = new_secret()
    language = supported(prefs.language)
    with db.write() as conn:
        store.add_invitation(conn, code_hash=digest(code), patient=patient_ref,
                             language=language, expires=now + days * 86400, now=now)
    return Invitation(code, patient_ref, prefs.email, language, now + days * 86400)


def join_link(root: str, code: str) -> str:
    return f"{root.rstrip('/')}{JOIN_PATH}?{urlencode({'code': code})}"


def invitation_email(invitation: Invitation, link: str, days: int) -> tuple[str, str]:
    """(subject, text) of the invitation e-mail, in the patient's language."""
    _ = translations(invitation.language).gettext
    text = "\n\n".join([
        _("Hello,"),
        _("Your care team invites you to see your care information online. Make your "
          "account with this link. It works for %(days)s days:") % {"days": days},
        link,
        _("You will need your date of birth. If you did not expect this e-mail, you can "
          "ignore it."),
        _("If you need help now, call or text 988. In an emergency, call 911."),
    ]) + "\n"
    return _("Make your account"), text


def send_invitation(smtp: SmtpSettings, invitation: Invitation, link: str, days: int) -> None:
    subject, text = invitation_email(invitation, link, days)
    send_mail(smtp, text_email(smtp, invitation.email, subject, text, invitation.language))


# -- the join page ---------------------------------------------------------------------


def _texts(language: str) -> dict[str, str]:
    _ = translations(language).gettext
    return {
        "title": _("Make your account"),
        "crisis": _("If you need help now, call or text 988. In an emergency, call 911."),
        "intro": _("Your care team invited you. Make your account to see your care "
                   "information."),
        "birth_date": _("Your date of birth"),
        "username": _("Choose a username"),
        "username_hint": _("Letters, numbers and . _ - @ only. You can use your e-mail "
                           "address."),
        "password": _("Choose a password"),
        "password_hint": _("At least 8 characters. Do not use a password you use "
                           "somewhere else."),
        "password2": _("Type the password again"),
        "submit": _("Make my account"),
        "gone": _("This link does not work any more. Ask your care team for a new one."),
        "wrong": _("This date of birth does not match our record. Check it and try again."),
        "mismatch": _("The two passwords are not the same."),
        "taken": _("This username is taken. Choose another one."),
        "bad": _("Use at least 8 characters for the password, and only letters, numbers "
                 "and . _ - @ in the username."),
    }


def _find(conn: Any, code: str, now: int) -> tuple[Any, bool]:
    """(the invitation of `code` or None, whether it can still be used)."""
    row = store.invitation_row(conn, digest(code or ""))
    live = row is not None and row.used is None and row.expires >= now \
        and row.failures < MAX_FAILURES
    return row, live


def create_join_blueprint(db: Database) -> Blueprint:
    """`/auth/join`: the page an invitation link opens."""
    bp = Blueprint("patient_join", __name__, template_folder="templates")

    def page(lang: str, status: int = 200, **values: Any) -> Response:
        body = render_template("auth_join.html", lang=lang, t=_texts(lang), action=JOIN_PATH,
                               values=values.pop("values", {}), **values)
        resp = Response(body, status, mimetype="text/html")
        resp.headers["Cache-Control"] = "no-store"
        resp.headers["Referrer-Policy"] = "no-referrer"  # the code is in the URL
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["Content-Security-Policy"] = (
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
            "frame-ancestors 'none'")
        return resp

    def language(row: Any) -> str:
        asked = request.values.get("lang", "")
        return asked if asked in LANGUAGE_NAMES else (row.language if row else "en")

    @bp.get(JOIN_PATH)
    def join_form() -> Response:
        code = request.args.get("code", "")
        with db.read() as conn:
            row, live = _find(conn, code, int(time.time()))
        if not live:
            return page(language(row), 404, gone=True)
        return page(language(row), code=code)

    @bp.post(JOIN_PATH)
    def join() -> Response:
        code = request.form.get("code", "")
        now = int(time.time())
        with db.read() as conn:
            row, live = _find(conn, code, now)
        if not live:
            return page(language(row), 404, gone=True)
        lang, texts = language(row), _texts(language(row))
        username = request.form.get("username", "").strip()
        password = request.form.get("password", "")
        values = {"birth_date": request.form.get("birth_date", ""), "username": username}
        patient = _patient(db, row.patient) or {}
        given = request.form.get("birth_date", "").strip()
        if not patient.get("birthDate") or not hmac.compare_digest(
                given, str(patient["birthDate"])):
            with db.write() as conn:
                store.count_failure(conn, digest(code))
            return page(lang, 400, code=code, errors=[texts["wrong"]], values=values)
        errors = []
        if password != request.form.get("password2", ""):
            errors.append(texts["mismatch"])
        try:
            check_new_credentials(username, password)
        except ValueError:
            errors.append(texts["bad"])
        with db.read() as conn:
            existing = get_user(conn, username) if username else None
        if existing is not None and existing.fhir_user != row.patient:
            errors.append(texts["taken"])
        if errors:
            return page(lang, 400, code=code, errors=errors, values=values)
        with db.write() as conn:
            if not store.spend(conn, digest(code), now):
                return page(lang, 404, gone=True)
            save_user(conn, username=username, password=password, patient=row.patient)
        signed = az.login(db, username, password)
        response = redirect(f"/me/login?{urlencode({'lang': lang})}", 303)
        if signed is not None:
            response.set_cookie(SESSION_COOKIE, signed[0], max_age=az.SESSION_LIFETIME,
                                httponly=True, samesite="Lax", secure=request.is_secure,
                                path="/auth")
        return response

    return bp
