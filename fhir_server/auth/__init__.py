"""SMART on FHIR authorization server and the access policy (see README.md here).

Public API for the rest of the server:

* `create_auth_blueprint(db, settings, patient_lookup=..., audit=...)` (server.py)
* `authenticate(headers, db, settings) -> AccessContext` (bearer.py)
* `check_interaction(ctx, interaction, res_type, resource=None)` and
  `restrict_for(ctx, res_type) -> SearchRestriction` (policy.py)
* `AccessContext`, `SYSTEM` (context.py); `capability_security(settings)` (discovery.py)
* `build_audit_event`, `build_provenance` (audit.py); `record_audit` (audit_store.py)
* `register_cli`, `add_user`, `add_client` (cli.py)

Import `fhir_server.auth.auth_schema` before `metadata.create_all` to get the auth tables.
"""

from fhir_server.auth.context import SYSTEM, AccessContext

__all__ = ["SYSTEM", "AccessContext"]
