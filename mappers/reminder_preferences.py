"""How a patient wants to be reminded, read from and written into their Patient resource
(pure: dict in, dict out). The patient pages write it; the reminder sender reads it.

Where it lives:
* the addresses: `Patient.telecom` (`email`; `sms`, else a `mobile` phone, for texts);
* the language: the preferred `Patient.communication` (its primary subtag: `es`);
* the choices: one extension on the Patient,
  `<CANONICAL_BASE>/StructureDefinition/patient-reminders`, with a `valueCode` sub-extension
  `opt-out` for each channel the patient turned off (`email`, `sms`). No extension, or no
  `opt-out`, means reminders are on for every channel the patient has an address for.
"""

from __future__ import annotations

from dataclasses import dataclass

from fhir_server.json_tree import copy_tree
from fhir_server.workflow.canonical import CANONICAL_BASE

REMINDERS_EXTENSION = f"{CANONICAL_BASE}/StructureDefinition/patient-reminders"
CHANNELS = ("email", "sms")
BCP47 = "urn:ietf:bcp:47"


@dataclass(frozen=True)
class Preferences:
    """A patient's reminder addresses, language and choices."""

    email: str = ""
    phone: str = ""  # for text messages
    language: str = ""
    opted_out: frozenset[str] = frozenset()

    def wants(self, channel: str) -> bool:
        """Send reminders over `channel`: the patient has an address and did not opt out."""
        address = self.email if channel == "email" else self.phone if channel == "sms" else ""
        return bool(address) and channel not in self.opted_out


def _telecom(patient: dict, system: str, use: str | None = None) -> str:
    for point in patient.get("telecom") or []:
        if not isinstance(point, dict) or point.get("system") != system:
            continue
        if (point.get("period") or {}).get("end"):
            continue  # no longer in use
        if use is None or point.get("use") == use:
            value = str(point.get("value") or "").strip()
            if value:
                return value
    return ""


def preferred_language(patient: dict) -> str:
    comms = [c for c in patient.get("communication") or [] if isinstance(c, dict)]
    chosen = next((c for c in comms if c.get("preferred")), comms[0] if comms else None)
    for coding in ((chosen or {}).get("language") or {}).get("coding") or []:
        if coding.get("code"):
            return str(coding["code"]).split("-")[0].lower()
    return ""


def preferences(patient: dict | None) -> Preferences:
    """The reminder preferences a Patient resource holds."""
    patient = patient or {}
    opted: set[str] = set()
    for ext in patient.get("extension") or []:
        if ext.get("url") != REMINDERS_EXTENSION:
            continue
        for part in ext.get("extension") or []:
            if part.get("url") == "opt-out" and part.get("valueCode") in CHANNELS:
                opted.add(part["valueCode"])
    return Preferences(
        email=_telecom(patient, "email"),
        phone=_telecom(patient, "sms") or _telecom(patient, "phone", "mobile"),
        language=preferred_language(patient), opted_out=frozenset(opted))


def with_preferences(patient: dict, opted_out: set[str] | frozenset[str],
                     language: str | None = None) -> dict:
    """A copy of the Patient with these choices (and, when given, `language` as the
    preferred communication language)."""
    out = copy_tree(patient)
    others = [e for e in out.get("extension") or [] if e.get("url") != REMINDERS_EXTENSION]
    parts = [{"url": "opt-out", "valueCode": c} for c in CHANNELS if c in opted_out]
    out["extension"] = others + ([{"url": REMINDERS_EXTENSION, "extension": parts}]
                                 if parts else [])
    if not out["extension"]:
        del out["extension"]
    if language:
        comms = [c for c in out.get("communication") or [] if isinstance(c, dict)]
        for comm in comms:
            comm.pop("preferred", None)
        match = next((c for c in comms if any(
            str(x.get("code", "")).split("-")[0].lower() == language
            for x in (c.get("language") or {}).get("coding") or [])), None)
        if match is None:
            match = {"language": {"coding": [{"system": BCP47, "code": language}]}}
            comms.append(match)
        match["preferred"] = True
        out["communication"] = comms
    return out
