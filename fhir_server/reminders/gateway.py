"""Text messages through an SMS gateway. `SmsGateway` is the interface; `HttpSmsGateway` the
one implementation: an HTTP API configured by URL and credential.

The request: `POST <FHIR_SERVER_SMS_URL>` with `Authorization: Bearer <token>` (the token
read from `FHIR_SERVER_SMS_TOKEN_FILE`) and the JSON body
`{"to": "+16175550100", "from": "<FHIR_SERVER_SMS_FROM>", "text": "..."}`. Any 2xx answer
means accepted. A 429, a 5xx or no answer is worth retrying; any other answer is not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import requests

from fhir_server.config import Settings


class SmsError(Exception):
    """The gateway did not take the message; `retry` says whether trying later may help."""

    def __init__(self, message: str, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


class SmsGateway(Protocol):
    def send(self, to: str, text: str) -> None:
        """Send one text message (raises SmsError)."""


def phone_number(value: str) -> str:
    """A number as gateways take it: `+` and digits only (`+1 617-555-0100` → `+16175550100`)."""
    digits = re.sub(r"[^\d]", "", value)
    return f"+{digits}" if value.strip().startswith("+") else digits


@dataclass(frozen=True)
class HttpSmsGateway:
    url: str
    token: str
    sender: str = ""
    timeout: float = 10.0

    def send(self, to: str, text: str) -> None:
        body = {"to": phone_number(to), "text": text}
        if self.sender:
            body["from"] = self.sender
        try:
            answer = requests.post(self.url, json=body, timeout=self.timeout,
                                   headers={"Authorization": f"Bearer {self.token}"})
        except requests.RequestException as exc:
            raise SmsError(f"the SMS gateway did not answer ({type(exc).__name__})",
                           retry=True) from None
        if 200 <= answer.status_code < 300:
            return
        retry = answer.status_code == 429 or answer.status_code >= 500
        raise SmsError(f"the SMS gateway answered HTTP {answer.status_code}", retry=retry)


def gateway_from(settings: Settings) -> HttpSmsGateway | None:
    """The configured gateway, or None (no text messages) when no URL is set."""
    if not settings.sms_url:
        return None
    if not settings.sms_token_file:
        raise ValueError("FHIR_SERVER_SMS_URL is set but FHIR_SERVER_SMS_TOKEN_FILE is not: "
                         "give the file holding the gateway's credential")
    token = Path(settings.sms_token_file).read_text().strip()
    if not token:
        raise ValueError(f"FHIR_SERVER_SMS_TOKEN_FILE {settings.sms_token_file} is empty")
    return HttpSmsGateway(settings.sms_url, token, settings.sms_sender)
