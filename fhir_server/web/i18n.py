"""Languages of our pages: message catalogues (Babel, through Flask-Babel) and the choice of
language for each request.

Texts are written in English in templates (`{{ _("...") }}`) and Python (`gettext`,
`lazy_gettext`); the translations live in `translations/<lang>/LC_MESSAGES/messages.po`
(compiled `.mo` committed next to it; `tests/test_web_i18n.py` fails when either is stale).
Refresh them after changing texts with `python -m fhir_server.web.catalogues update`, then
translate the new entries and run `... catalogues compile` (README.md, "Translations").

An app lists the languages it speaks in `AppSpec.languages` (the care team's app: English
only). For an app with several, the page language is, in order: `?lang=` on the request
(then remembered in the `mhr_lang` cookie), that cookie, the signed-in user's preferred
language (the Patient's `communication`), the browser's `Accept-Language`, the first one.
Messages sent outside a request (reminders) use `translations(lang)`.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from pathlib import Path

from babel.dates import format_date
from babel.support import NullTranslations, Translations
from flask import Flask, g, request
from flask_babel import Babel, get_locale

from fhir_server.web.words import parse_time

TRANSLATIONS = Path(__file__).parent / "translations"
BABEL_CONFIG = Path(__file__).parent / "babel.cfg"
DOMAIN = "messages"
COOKIE = "mhr_lang"
DEFAULT = "en"
# Words for each language in the language itself (for the switch between them).
LANGUAGE_NAMES = {"en": "English", "es": "Español"}


def N_(text: str) -> str:
    """Mark a text for the catalogue where it is defined; it is translated where it is
    shown (`{{ _(text) }}`)."""
    return text


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


@lru_cache(maxsize=8)
def translations(language: str) -> NullTranslations:
    """The catalogue of `language` for texts made outside a request (reminders)."""
    return Translations.load(str(TRANSLATIONS), [language], DOMAIN)


def long_day(value: str | datetime | None, language: str | None = None) -> str:
    """A day as people say it: `3 December 2026` / `3 de diciembre de 2026`."""
    moment = value if isinstance(value, datetime) else parse_time(value)
    if moment is None:
        return ""
    language = language or str(get_locale() or DEFAULT)
    # Translators give the pattern of their language (Unicode date pattern).
    pattern = translations(language).gettext("d MMMM y")
    return format_date(moment.date(), pattern, locale=language)
