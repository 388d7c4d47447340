"""FHIR R4 server for closed-loop mental-health referrals."""

FHIR_VERSION = "4.0.1"
SOFTWARE_NAME = "mh-referral-fhir"
SOFTWARE_VERSION = "0.1.0"
