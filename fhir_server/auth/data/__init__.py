"""FHIR definition data used by the access policy (see _generate.py)."""
