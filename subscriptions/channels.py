"""Channel transports: rest-hook (HTTP POST) and email (SMTP). One job: send one bundle.

rest-hook posts go through one process-wide urllib3 pool manager (thread-safe), so
connections to an endpoint are kept alive and reused by every delivery thread.
"""

from __future__ import annotations

import smtplib
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import orjson
import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from subscriptions.subscription_rules import SubscriptionSpec


class DeliveryError(Exception):
    """A notification was not accepted by the endpoint."""

    def __init__(self, message: str, code: str = "no-response") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class SmtpSettings:
    """SMTP server used by the email channel (settings smtp_host, smtp_port, smtp_from)."""

    host: str = "localhost"
    port: int = 25
    sender: str = "fhir-server@localhost"


_pool_lock = threading.Lock()
_pool: urllib3.PoolManager | None = None
POOL_HOSTS = 100  # endpoints whose connections are kept
POOL_PER_HOST = 16  # idle keep-alive connections kept per endpoint


def _manager() -> urllib3.PoolManager:
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                try:
                    import certifi  # the CA bundle requests uses

                    ca: str | None = certifi.where()
                except ImportError:
                    ca = None
                _pool = urllib3.PoolManager(num_pools=POOL_HOSTS, maxsize=POOL_PER_HOST,
                                            block=False, ca_certs=ca)
    return _pool


def serialise(bundle: dict[str, Any], spec: SubscriptionSpec) -> bytes:
    """The bundle in the Subscription's payload format (JSON, or XML via fhir_server.formats)."""
    if spec.is_xml:
        try:
            from fhir_server.formats.xml import json_to_xml  # lazy: written by another module
        except ImportError as exc:
            raise DeliveryError(
                "XML payloads need fhir_server.formats.xml.json_to_xml, which is not installed",
                "processing",
            ) from exc
        out = json_to_xml(bundle, lenient=True)
        return out.encode("utf-8") if isinstance(out, str) else out
    return orjson.dumps(bundle)


def send_rest_hook(spec: SubscriptionSpec, body: bytes) -> int:
    """POST the body with every channel.header verbatim; return the HTTP status (2xx)."""
    headers = {name: value for name, value in spec.headers}
    headers["Content-Type"] = spec.payload_mime
    try:
        resp = _manager().request(
            "POST", spec.endpoint, body=body, headers=headers, redirect=False, retries=False,
            timeout=urllib3.Timeout(connect=min(spec.timeout, 10), read=spec.timeout),
        )
    except NewConnectionError as exc:
        raise DeliveryError(f"cannot reach {spec.endpoint}: {exc.__class__.__name__}") from exc
    except Urllib3Timeout as exc:
        raise DeliveryError(f"no response from {spec.endpoint} within {spec.timeout}s") from exc
    except (HTTPError, OSError, ValueError) as exc:
        raise DeliveryError(f"cannot reach {spec.endpoint}: {exc.__class__.__name__}") from exc
    if not 200 <= resp.status < 300:
        raise DeliveryError(f"endpoint answered HTTP {resp.status}")
    return resp.status


def text_email(smtp: SmtpSettings, to: str, subject: str, text: str,
               language: str = "") -> EmailMessage:
    """A plain-text e-mail from the configured sender."""
    msg = EmailMessage()
    msg["From"] = smtp.sender
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(text)  # clears Content-* headers: set Content-Language after it
    if language:
        msg["Content-Language"] = language
    return msg


def send_mail(smtp: SmtpSettings, msg: EmailMessage, timeout: float = 10.0) -> None:
    """Hand one message to the SMTP server (raises DeliveryError)."""
    try:
        with smtplib.SMTP(smtp.host, smtp.port, timeout=timeout) as client:
            client.send_message(msg)
    except (OSError, smtplib.SMTPException) as exc:
        raise DeliveryError(f"SMTP delivery to {msg['To']} failed: {exc}") from exc


def send_email(spec: SubscriptionSpec, body: bytes, subject: str, summary: str,
               smtp: SmtpSettings) -> None:
    """Mail a short human-readable summary with the notification bundle attached."""
    msg = text_email(smtp, spec.endpoint.removeprefix("mailto:").split("?")[0], subject,
                     summary)
    maintype, _, subtype = spec.payload_mime.partition("/")
    ext = "xml" if spec.is_xml else "json"
    msg.add_attachment(body, maintype=maintype, subtype=subtype,
                       filename=f"notification.{ext}")
    send_mail(smtp, msg, spec.timeout)


def email_text(sub_id: str, spec: SubscriptionSpec, kind: str, event_count: int,
               base_url: str) -> tuple[str, str]:
    """(subject, body) of an e-mail notification: the Subscription's `reason` first (what
    the reader should do), then which Subscription and topic sent it."""
    technical = (f"FHIR Subscription {sub_id} ({spec.topic_url}): {kind}, {event_count} "
                 f"events since start. Retrieve the updated records from {base_url}.")
    if not spec.reason.strip():
        return f"FHIR Subscription {sub_id}: {kind}", technical
    headline = spec.reason.strip().split(". ")[0].split("\n")[0][:120].rstrip(".")
    return f"{headline} (FHIR Subscription {sub_id}: {kind})", \
        f"{spec.reason.strip()}\n\n{technical}"


def deliver(spec: SubscriptionSpec, bundle: dict[str, Any], smtp: SmtpSettings,
            subject: str, summary: str) -> None:
    """Send one notification bundle over the Subscription's channel (raises DeliveryError)."""
    body = serialise(bundle, spec)
    if spec.channel_type == "rest-hook":
        send_rest_hook(spec, body)
    elif spec.channel_type == "email":
        send_email(spec, body, subject, summary, smtp)
    else:
        raise DeliveryError(f"channel type {spec.channel_type} is not supported", "processing")
