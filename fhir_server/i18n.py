"""Languages: the message catalogues of everything we say to people (pages, reminders,
invitations), with Babel. Texts are written in English and marked (`_("...")`,
`gettext`, `lazy_gettext`, `N_`); translations live in
`translations/<lang>/LC_MESSAGES/messages.po`, compiled to the `.mo` beside it (committed;
`tests/test_i18n.py` fails when either is stale). Refresh them with
`python -m fhir_server.catalogues update`, translate, then `... catalogues compile`.

This module has no web framework in it: the pages use it through `fhir_server.web.i18n`
(Flask-Babel), the reminder sender and the invitation page directly.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from pathlib import Path

from babel.dates import format_date
from babel.support import NullTranslations, Translations

from fhir_server.workflow.times import parse_instant

TRANSLATIONS = Path(__file__).parent / "translations"
BABEL_CONFIG = Path(__file__).parent / "babel.cfg"
DOMAIN = "messages"
DEFAULT = "en"
# Each language's name in the language itself (the switch between them).
LANGUAGE_NAMES = {"en": "English", "es": "Español"}


def N_(text: str) -> str:
    """Mark a text for the catalogue where it is defined; it is translated where it is
    shown (`{{ _(text) }}`)."""
    return text


def supported(language: str | None) -> str:
    """`language` when we speak it, else English."""
    return language if language in LANGUAGE_NAMES else DEFAULT


@lru_cache(maxsize=8)
def translations(language: str) -> NullTranslations:
    """The catalogue of `language` (texts made outside a page request)."""
    return Translations.load(str(TRANSLATIONS), [language], DOMAIN)


def long_day(value: str | datetime | None, language: str) -> str:
    """A day as people say it: `3 December 2026` / `3 de diciembre de 2026`."""
    moment = value if isinstance(value, datetime) else parse_instant(value)
    if moment is None:
        return ""
    # Translators give the pattern of their language (Unicode date pattern).
    pattern = translations(language).gettext("d MMMM y")
    return format_date(moment.date(), pattern, locale=language)
