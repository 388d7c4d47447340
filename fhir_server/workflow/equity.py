"""Who was referred: the equity dimensions of a referral's patient, in codes and words, and
the small-cell rule that keeps small groups from being identified.

Dimensions (each a short code, with words in `LABELS`):
  age-band   age on the day of the referral: 0-17, 18-25, 26-44, 45-64, 65+
  sex        Patient.gender (administrative sex): female, male, other, unknown
  race       US Core race extension, OMB categories (`ombCategory`): one category, or
             `multiple` when several are recorded; `declined` (asked, declined), `unknown`
  ethnicity  US Core ethnicity extension: hispanic, not-hispanic, declined, unknown
  language   the preferred language (Patient.communication, `preferred`, else the first):
             its primary BCP-47 subtag (`es` for `es-MX`)
  coverage   the patient's active Coverage (lowest `order`, then the latest): medicaid,
             medicare, other-public, private, self-pay, uninsured, other; `none` without one

Small cells: a count of 1 to `threshold - 1` is shown as "<threshold" (the default 11 is a
common public-health rule); see `suppress`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mappers.languages import language_name

US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition"
RACE_EXTENSION = f"{US_CORE}/us-core-race"
ETHNICITY_EXTENSION = f"{US_CORE}/us-core-ethnicity"
CDC_RACE_ETHNICITY = "urn:oid:2.16.840.1.113883.6.238"
NULL_FLAVOR = "http://terminology.hl7.org/CodeSystem/v3-NullFlavor"
PAYER_TYPE = "http://mh-referral.example.org/fhir/CodeSystem/payer-type"
SOURCE_OF_PAYMENT = "urn:oid:2.16.840.1.113883.3.221.5"  # PHDSC Source of Payment Typology
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"

DIMENSIONS: tuple[str, ...] = ("age-band", "sex", "race", "ethnicity", "language", "coverage")

AGE_BANDS: tuple[tuple[int, int | None, str], ...] = (
    (0, 17, "0-17"), (18, 25, "18-25"), (26, 44, "26-44"), (45, 64, "45-64"), (65, None, "65+"))

RACE_CODES = {"1002-5": "american-indian", "2028-9": "asian", "2054-5": "black",
              "2076-8": "pacific-islander", "2106-3": "white"}
ETHNICITY_CODES = {"2135-2": "hispanic", "2186-5": "not-hispanic"}

LABELS: dict[str, dict[str, str]] = {
    "age-band": {"0-17": "0 to 17", "18-25": "18 to 25", "26-44": "26 to 44",
                 "45-64": "45 to 64", "65+": "65 and over", "unknown": "Age not recorded"},
    "sex": {"female": "Female", "male": "Male", "other": "Other",
            "unknown": "Unknown"},
    "race": {"american-indian": "American Indian or Alaska Native", "asian": "Asian",
             "black": "Black or African American",
             "pacific-islander": "Native Hawaiian or Other Pacific Islander",
             "white": "White", "multiple": "More than one race",
             "declined": "Declined to answer", "unknown": "Not recorded"},
    "ethnicity": {"hispanic": "Hispanic or Latino", "not-hispanic": "Not Hispanic or Latino",
                  "declined": "Declined to answer", "unknown": "Not recorded"},
    "language": {"unknown": "Not recorded"},
    "coverage": {"medicaid": "Medicaid", "medicare": "Medicare",
                 "other-public": "Other public coverage", "private": "Private insurance",
                 "self-pay": "Self-pay", "uninsured": "Uninsured", "other": "Other coverage",
                 "none": "No coverage on record",
                 "not-visible": "Coverage not visible to you"},
}


@dataclass(frozen=True)
class Demographics:
    """The equity codes of one patient (age is per referral: see `age_band`)."""

    birth_date: int | None  # YYYYMMDD
    sex: str
    race: str
    ethnicity: str
    language: str


def label(dimension: str, code: str | None) -> str:
    """Words for a code of an equity dimension (the code itself when unknown to us)."""
    code = code or "unknown"
    known = LABELS.get(dimension, {}).get(code)
    if known is None and dimension == "language":
        return language_name(code)
    return known or code


def ymd(text: object) -> int | None:
    """A FHIR date (YYYY, YYYY-MM or YYYY-MM-DD) as an integer YYYYMMDD (month and day 1 when
    missing), or None."""
    if not isinstance(text, str) or len(text) < 4 or not text[:4].isdigit():
        return None
    parts = (text[:10].split("-") + ["01", "01"])[:3]
    try:
        year, month, day = (int(p) for p in parts)
    except ValueError:
        return None
    return year * 10000 + month * 100 + day


def age_band(age_years: int | None) -> str:
    """The band code of an age in whole years (`unknown` when None or negative)."""
    if age_years is None or age_years < 0:
        return "unknown"
    for low, high, code in AGE_BANDS:
        if age_years >= low and (high is None or age_years <= high):
            return code
    return "unknown"


def age_on(birth_ymd: int | None, day_ymd: int | None) -> int | None:
    """Whole years between two YYYYMMDD days (the integer difference trick)."""
    if birth_ymd is None or day_ymd is None:
        return None
    return (day_ymd - birth_ymd) // 10000


def _extension(resource: dict, url: str) -> dict | None:
    for ext in resource.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == url:
            return ext
    return None


def _omb_codes(resource: dict, url: str) -> tuple[list[str], bool]:
    """The ombCategory codes of a US Core race/ethnicity extension and whether it says the
    person declined (asked but unknown)."""
    ext = _extension(resource, url)
    if ext is None:
        return [], False
    codes, declined = [], False
    for sub in ext.get("extension") or []:
        if not isinstance(sub, dict) or sub.get("url") != "ombCategory":
            continue
        coding = sub.get("valueCoding") or {}
        if coding.get("system") == NULL_FLAVOR:
            declined = declined or coding.get("code") == "ASKU"
        elif coding.get("code"):
            codes.append(str(coding["code"]))
    return codes, declined


def race_of(patient: dict) -> str:
    codes, declined = _omb_codes(patient, RACE_EXTENSION)
    known = sorted({RACE_CODES[c] for c in codes if c in RACE_CODES})
    if len(known) > 1:
        return "multiple"
    if known:
        return known[0]
    return "declined" if declined else "unknown"


def ethnicity_of(patient: dict) -> str:
    codes, declined = _omb_codes(patient, ETHNICITY_EXTENSION)
    known = [ETHNICITY_CODES[c] for c in codes if c in ETHNICITY_CODES]
    if known:
        return known[0]
    return "declined" if declined else "unknown"


def sex_of(patient: dict) -> str:
    gender = patient.get("gender")
    return gender if gender in ("female", "male", "other", "unknown") else "unknown"


def language_of(patient: dict) -> str:
    """The primary subtag of the preferred language (lower case), or `unknown`."""
    communication = [c for c in patient.get("communication") or [] if isinstance(c, dict)]
    chosen = next((c for c in communication if c.get("preferred") is True),
                  communication[0] if communication else None)
    if chosen is None:
        return "unknown"
    for coding in (chosen.get("language") or {}).get("coding") or []:
        code = str(coding.get("code") or "").strip()
        if code:
            return code.split("-")[0].lower()[:35]
    return "unknown"


def demographics(patient: dict | None) -> Demographics:
    """The equity codes of a Patient (all `unknown` without one)."""
    if not patient:
        return Demographics(None, "unknown", "unknown", "unknown", "unknown")
    return Demographics(ymd(patient.get("birthDate")), sex_of(patient), race_of(patient),
                        ethnicity_of(patient), language_of(patient))


def coverage_type(coverage: dict) -> str:
    """The coverage code of one Coverage from its `type` codings."""
    for coding in (coverage.get("type") or {}).get("coding") or []:
        system, code = coding.get("system"), str(coding.get("code") or "")
        if system == PAYER_TYPE:
            return {"medicaid": "medicaid", "medicare": "medicare", "private": "private",
                    "sliding-fee": "self-pay", "free": "uninsured",
                    "uninsured": "uninsured"}.get(code, "other")
        if system == SOURCE_OF_PAYMENT and code[:1].isdigit():
            return {"1": "medicare", "2": "medicaid", "3": "other-public", "4": "other-public",
                    "5": "private", "6": "private", "7": "private",
                    "8": "self-pay"}.get(code[0], "other")
        if system == ACT_CODE:
            if code in ("PUBLICPOL", "SUBSIDIZ", "SUBSIDMC", "SUBSUPP"):
                return "other-public"
            if code in ("PAY", "SELF"):
                return "self-pay"
            return "private" if code.endswith("POL") else "other"
    return "other"


def choose_coverage(coverages: Iterable[tuple[int, dict]]) -> tuple[int | None, str]:
    """(pid, code) of the coverage that counts among a patient's Coverages as (pid, body):
    active ones only, the lowest `order` first, then the latest; (None, "none") without."""
    active = [(pid, c) for pid, c in coverages if c.get("status") == "active"]
    if not active:
        return None, "none"
    pid, chosen = min(active, key=lambda pc: (
        pc[1].get("order") if isinstance(pc[1].get("order"), int) else 1_000_000, -pc[0]))
    return pid, coverage_type(chosen)


HIDDEN = "suppressed"
"""How a count of a hidden group shows when it is not small itself (secondary suppression)."""


def suppressed(threshold: int) -> str:
    """How a suppressed count is shown."""
    return f"<{threshold}"


def suppress(count: int, threshold: int) -> int | str:
    """`count`, or "<threshold" for 1 to threshold - 1 (a threshold <= 1 suppresses nothing)."""
    if threshold > 1 and 0 < count < threshold:
        return suppressed(threshold)
    return count
