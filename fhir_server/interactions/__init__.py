"""FHIR interactions: each runs validation, workflow rules and storage in one transaction."""
