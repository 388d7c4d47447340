"""Pure helpers: what the referral page shows about the patient and the latest scores, and
the ServiceRequest the form creates."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mappers.screening_instruments import GAD7, PHQ9, Instrument

SNOMED = "http://snomed.info/sct"
REFERRAL_CODE = ("390866009", "Referral to mental health team")
PRIORITIES = ("routine", "urgent", "asap", "stat")
MAX_REASON = 1000
INSTRUMENTS: dict[str, Instrument] = {"phq9": PHQ9, "gad7": GAD7}


def patient_summary(patient: dict[str, Any]) -> dict[str, Any]:
    """Display name, birth date and id of a Patient resource."""
    return {"id": patient.get("id"), "name": display_name(patient),
            "birthDate": patient.get("birthDate") or "unknown"}


def display_name(patient: dict[str, Any]) -> str:
    """`given family` of the official (else first) name; `text` when that is all there is."""
    names = [n for n in patient.get("name") or [] if isinstance(n, dict)]
    if not names:
        return "(no name recorded)"
    name = next((n for n in names if n.get("use") == "official"), names[0])
    parts = [*(name.get("given") or []), name.get("family") or ""]
    text = " ".join(p for p in parts if p).strip()
    return text or name.get("text") or "(no name recorded)"


def score_summary(observation: dict[str, Any] | None, instrument: Instrument
                  ) -> dict[str, Any] | None:
    """Score, date and severity band of a total-score Observation (None when absent)."""
    if observation is None:
        return None
    value = observation.get("valueInteger")
    if value is None:
        value = (observation.get("valueQuantity") or {}).get("value")
    score = int(value) if isinstance(value, int | float) else None
    band = None
    if score is not None and 0 <= score <= instrument.max_total:
        band = instrument.band_for(score).display
    date = (observation.get("effectiveDateTime")
            or (observation.get("effectivePeriod") or {}).get("start")
            or observation.get("issued") or "")
    return {"instrument": instrument.title, "score": score, "date": date,
            "band": band or "not scored", "id": observation.get("id")}


def service_request(patient_id: str, reason: str, priority: str, requester: str | None,
                    supporting: list[str]) -> dict[str, Any]:
    """The referral ServiceRequest the form creates in the EHR."""
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "priority": priority,
        "code": {"coding": [{"system": SNOMED, "code": REFERRAL_CODE[0],
                             "display": REFERRAL_CODE[1]}], "text": REFERRAL_CODE[1]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "authoredOn": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "note": [{"text": reason}],
    }
    if requester:
        resource["requester"] = {"reference": requester}
    if supporting:
        resource["supportingInfo"] = [{"reference": ref} for ref in supporting]
    return resource


def check_form(form: dict[str, str]) -> tuple[str, str]:
    """(reason, priority) from the referral form; ValueError with a message if invalid."""
    reason = (form.get("reason") or "").strip()
    priority = form.get("priority") or "routine"
    if not reason:
        raise ValueError("Please give a reason for the referral.")
    if len(reason) > MAX_REASON:
        raise ValueError(f"The reason is longer than {MAX_REASON} characters.")
    if priority not in PRIORITIES:
        raise ValueError(f"Priority must be one of {', '.join(PRIORITIES)}.")
    return reason, priority
