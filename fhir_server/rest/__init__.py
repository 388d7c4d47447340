"""HTTP layer: parse the FHIR REST call, run one interaction, shape the response."""
