"""What a reminder says: that there is something new, and the sign-in link. Never a name, a
provider, a diagnosis or any other health detail (a phone's lock screen shows it). In the
patient's language, from the same message catalogues as the pages."""

from __future__ import annotations

from dataclasses import dataclass

from fhir_server.i18n import supported, translations
from fhir_server.reminders.rules import REFERRAL_ACCEPTED


@dataclass(frozen=True)
class Message:
    subject: str  # e-mail subject
    email: str  # e-mail text
    sms: str  # text message
    language: str


def message(reason: str, language: str, link: str) -> Message:
    """The reminder for `reason` in `language` (English when it is not one we speak)."""
    language = supported(language)
    _ = translations(language).gettext
    if reason == REFERRAL_ACCEPTED:
        news = _("There is news about your care.")
    else:
        news = _("You have something to do for your care.")
    sms = _("%(news)s Sign in to see it: %(link)s") % {"news": news, "link": link}
    email = "\n\n".join([
        _("Hello,"),
        news + " " + _("Please sign in to see it:"),
        link,
        _("To keep your information private, this message does not say more. To stop these "
          "reminders, sign in and open Reminders."),
        _("If you need help now, call or text 988. In an emergency, call 911."),
    ]) + "\n"
    return Message(subject=_("A message about your care"), email=email, sms=sms,
                   language=language)
