"""outcome measures: referral facts and screening scores

Revision ID: 0008_outcomes
Revises: 0007_security

- `referral_facts`: one row per referral Task (the time each status began, from its
  history; parties, service, the patient's equity codes, baseline and follow-up scores).
- `screening_scores`: one row per PHQ-9/GAD-7 total-score Observation.
Both are filled from the stored resources and the Task history on upgrade
(`features.outcomes.rebuild`), then kept current by every write.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_outcomes"
down_revision = "0007_security"
branch_labels = None
depends_on = None


def _ints(*names: str) -> list[sa.Column]:
    return [sa.Column(name, sa.Integer(), nullable=True) for name in names]


def _bigints(*names: str) -> list[sa.Column]:
    return [sa.Column(name, sa.BigInteger(), nullable=True) for name in names]


def _strings(length: int, *names: str) -> list[sa.Column]:
    return [sa.Column(name, sa.String(length=length), nullable=True) for name in names]


def upgrade() -> None:
    op.create_table(
        "referral_facts",
        sa.Column("pid", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("task_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("redirected", sa.Boolean(), nullable=False),
        sa.Column("stalled", sa.String(length=64), nullable=True),
        sa.Column("status_reason", sa.Text(), nullable=True),
        *_strings(128, "requester", "requester_ref", "owner", "owner_ref", "service",
                  "category"),
        sa.Column("category_name", sa.String(length=200), nullable=True),
        sa.Column("priority", sa.String(length=16), nullable=False),
        *_strings(128, "focus"),
        *_strings(64, "patient_id"),
        sa.Column("referred_at", sa.BigInteger(), nullable=False),
        sa.Column("referred_day", sa.Integer(), nullable=False),
        sa.Column("first_at", sa.BigInteger(), nullable=False),
        *_bigints("requested_at", "accepted_at", "started_at", "completed_at", "ended_at"),
        sa.Column("status_since", sa.BigInteger(), nullable=False),
        *_ints("birth_day", "age_years"),
        *_strings(16, "sex"),
        *_strings(32, "race", "ethnicity"),
        *_strings(35, "language"),
        *_strings(32, "coverage"),
        *_bigints("coverage_pid"),
        *_ints("phq9_base"), *_bigints("phq9_base_pid"),
        *_ints("phq9_follow"), *_bigints("phq9_follow_pid"),
        *_ints("gad7_base"), *_bigints("gad7_base_pid"),
        *_ints("gad7_follow"), *_bigints("gad7_follow_pid"),
        sa.PrimaryKeyConstraint("pid"),
    )
    op.create_index("ix_referral_facts_owner", "referral_facts", ["owner_ref"], unique=False)
    op.create_index("ix_referral_facts_patient", "referral_facts", ["patient_id"],
                    unique=False)
    op.create_index("ix_referral_facts_referred", "referral_facts", ["referred_at"],
                    unique=False)
    op.create_table(
        "screening_scores",
        sa.Column("pid", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("instrument", sa.String(length=16), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("effective", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("pid"),
    )
    op.create_index("ix_screening_scores_patient", "screening_scores",
                    ["patient_id", "instrument", "effective"], unique=False)
    _backfill()


def _backfill() -> None:
    """Facts for the referrals already stored (nothing to do on a new database)."""
    conn = op.get_bind()
    has_tasks = conn.execute(sa.text(
        "SELECT 1 FROM resources WHERE res_type = 'Task' LIMIT 1")).first()
    if has_tasks is None:
        return
    from fhir_server.features.outcomes import rebuild

    rebuild(conn)


def downgrade() -> None:
    op.drop_index("ix_screening_scores_patient", table_name="screening_scores")
    op.drop_table("screening_scores")
    op.drop_index("ix_referral_facts_referred", table_name="referral_facts")
    op.drop_index("ix_referral_facts_patient", table_name="referral_facts")
    op.drop_index("ix_referral_facts_owner", table_name="referral_facts")
    op.drop_table("referral_facts")
