"""Tables the outcome measures read: one row per referral Task (its facts, derived from its
history on every write) and one row per PHQ-9/GAD-7 total score.

`referral_facts.pid` and `screening_scores.pid` are the `resources.pid` of the Task and of
the Observation: a query joins `resources` on them to apply the caller's access narrowing.
Times are epoch microseconds (UTC) like every other table; days are integers YYYYMMDD.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, String, Table, Text

from fhir_server.storage.schema import metadata

referral_facts = Table(
    "referral_facts",
    metadata,
    Column("pid", BigInteger, primary_key=True, autoincrement=False),  # the Task's pid
    Column("task_id", String(64), nullable=False),
    Column("status", String(32), nullable=False),
    Column("redirected", Boolean, nullable=False, default=False),
    Column("stalled", String(64), nullable=True),  # the stalled mark it carries now
    Column("status_reason", Text, nullable=True),
    # group keys: the organization behind a PractitionerRole/HealthcareService when known
    Column("requester", String(128), nullable=True),
    Column("requester_ref", String(128), nullable=True),  # Task.requester as written
    Column("owner", String(128), nullable=True),
    Column("owner_ref", String(128), nullable=True),
    Column("service", String(128), nullable=True),  # HealthcareService/x
    Column("category", String(128), nullable=True),  # code of the service category
    Column("category_name", String(200), nullable=True),
    Column("priority", String(16), nullable=False),
    Column("focus", String(128), nullable=True),
    Column("patient_id", String(64), nullable=True),
    # when the referral was made and when each status began
    Column("referred_at", BigInteger, nullable=False),
    Column("referred_day", Integer, nullable=False),  # YYYYMMDD (UTC)
    Column("first_at", BigInteger, nullable=False),  # the first stored version
    Column("requested_at", BigInteger, nullable=True),
    Column("accepted_at", BigInteger, nullable=True),
    Column("started_at", BigInteger, nullable=True),
    Column("completed_at", BigInteger, nullable=True),
    Column("ended_at", BigInteger, nullable=True),
    Column("status_since", BigInteger, nullable=False),
    # the patient's equity codes (kept current on Patient and Coverage writes)
    Column("birth_day", Integer, nullable=True),  # YYYYMMDD
    Column("age_years", Integer, nullable=True),  # on the day of the referral
    Column("sex", String(16), nullable=True),
    Column("race", String(32), nullable=True),
    Column("ethnicity", String(32), nullable=True),
    Column("language", String(35), nullable=True),
    Column("coverage", String(32), nullable=True),
    Column("coverage_pid", BigInteger, nullable=True),
    # measurement-based care: the baseline and follow-up totals chosen for this referral
    Column("phq9_base", Integer, nullable=True),
    Column("phq9_base_pid", BigInteger, nullable=True),
    Column("phq9_follow", Integer, nullable=True),
    Column("phq9_follow_pid", BigInteger, nullable=True),
    Column("gad7_base", Integer, nullable=True),
    Column("gad7_base_pid", BigInteger, nullable=True),
    Column("gad7_follow", Integer, nullable=True),
    Column("gad7_follow_pid", BigInteger, nullable=True),
)
Index("ix_referral_facts_referred", referral_facts.c.referred_at)
Index("ix_referral_facts_patient", referral_facts.c.patient_id)
Index("ix_referral_facts_owner", referral_facts.c.owner_ref)

screening_scores = Table(
    "screening_scores",
    metadata,
    Column("pid", BigInteger, primary_key=True, autoincrement=False),  # the Observation's pid
    Column("patient_id", String(64), nullable=False),
    Column("instrument", String(16), nullable=False),  # phq-9 | gad-7
    Column("score", Integer, nullable=False),
    Column("effective", BigInteger, nullable=False),
)
Index("ix_screening_scores_patient", screening_scores.c.patient_id,
      screening_scores.c.instrument, screening_scores.c.effective)
