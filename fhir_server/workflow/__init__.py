"""Closed-loop referral workflow rules (pure: no database, no Flask).

Modules:
  write_path             one call per write: check, clear stalled mark, stamp author
  task_rules             referral Task state machine and who may change what
  outputs                what closes the loop (Task.output rules for completion)
  service_request_rules  ServiceRequest lifecycle and the Tasks that follow it
  redirect               `Task/[id]/$redirect` planning
  platform               coordination-platform (indirect referral) planning
  stalled                stalled-referral detection and the businessStatus mark
  timeline               `Task/[id]/$timeline` from history versions
  metrics                `$referral-metrics` as Parameters and CSV
  artifacts              the CodeSystem this package publishes
  access_context         AccessContext (re-exported from auth) and party matching
  authorship             who made a version (meta.extension), read by $timeline
  refs, times, canonical small helpers and our canonical URLs
See RULES.md for the rules as implemented.
"""

from fhir_server.workflow.canonical import CANONICAL_BASE

__all__ = ["CANONICAL_BASE"]
