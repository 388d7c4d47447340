"""Languages of our pages: Flask-Babel on top of the catalogues of `fhir_server.i18n`, and
the choice of language for each request.

An app lists the languages it speaks in `AppSpec.languages` (the care team's app: English
only). For an app with several, the page language is, in order: `?lang=` on the request
(then remembered in the `mhr_lang` cookie), that cookie, the signed-in user's preferred
language (the Patient's `communication`), the browser's `Accept-Language`, the first one.
"""

from __future__ import annotations

from datetime import datetime

from flask import Flask, g, request
from flask_babel import Babel, get_locale

from fhir_server import i18n
from fhir_server.i18n import DEFAULT, DOMAIN, LANGUAGE_NAMES, N_, TRANSLATIONS

__all__ = ["COOKIE", "LANGUAGE_NAMES", "N_", "chosen_language", "init_app", "long_day"]
COOKIE = "mhr_lang"


def app_languages() -> tuple[str, ...]:
    """The languages the app serving this request speaks (English outside apps)."""
    here = g.get("web_current")
    return here.spec.languages if here is not None else (DEFAULT,)


def chosen_language(languages: tuple[str, ...]) -> str:
    """The language of this request's page, among `languages` (see the module doc)."""
    if len(languages) == 1:
        return languages[0]
    asked = request.args.get("lang", "")
    if asked in languages:
        return asked
    kept = request.cookies.get(COOKIE, "")
    if kept in languages:
        return kept
    here = g.get("web_current")
    preferred = here.user.language if here is not None else ""
    if preferred in languages:
        return preferred
    return request.accept_languages.best_match(languages) or languages[0]


def select_locale() -> str:
    return chosen_language(app_languages())


def init_app(app: Flask) -> None:
    """Install the catalogues and the language choice on the Flask app (once)."""
    if "babel" in app.extensions:
        return
    Babel(app, locale_selector=select_locale, default_domain=DOMAIN,
          default_translation_directories=str(TRANSLATIONS))

    @app.context_processor
    def _language() -> dict:
        return {"page_language": str(get_locale() or DEFAULT),
                "language_names": LANGUAGE_NAMES}


def long_day(value: str | datetime | None) -> str:
    """A day in the page language (`3 December 2026` / `3 de diciembre de 2026`)."""
    return i18n.long_day(value, str(get_locale() or DEFAULT))
