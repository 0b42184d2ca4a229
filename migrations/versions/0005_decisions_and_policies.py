"""credit decisions on record, and the credit policies that made them

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 19:50:00

`credit_policies`: each effective policy once, by version (the first 12 hex digits of the SHA-256 of its
values in canonical JSON), with its values and when it was first used.
`credit_decisions`: every create-loan decision, approved or not, with the request, the profile that was
scored, the score and its components, the outcome, the reasons, the policy version and the loan it created.
Append-only: a trigger refuses UPDATE and DELETE (US Regulation B keeps these records 25 months).
Both tables are new: nothing to backfill.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MONEY = sa.Numeric(precision=14, scale=2)
RATE = sa.Numeric(precision=5, scale=2)
POINTS = sa.Numeric(precision=5, scale=2)


def upgrade() -> None:
    op.create_table(
        "credit_policies",
        sa.Column("version", sa.String(length=12), nullable=False),
        sa.Column("policy_values", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("first_used", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_credit_policies")),
    )
    op.create_table(
        "credit_decisions",
        sa.Column("decision_id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("loan_amount", MONEY, nullable=False),
        sa.Column("interest_rate", RATE, nullable=False),
        sa.Column("tenure", sa.Integer(), nullable=False),
        sa.Column("approved_limit", MONEY, nullable=False),
        sa.Column("monthly_salary", MONEY, nullable=False),
        sa.Column("current_debt", sa.Numeric(precision=18, scale=2), nullable=False),
        sa.Column("current_emis", sa.Numeric(precision=18, scale=2), nullable=False),
        sa.Column("emis_due", sa.BigInteger(), nullable=False),
        sa.Column("emis_paid_due", sa.BigInteger(), nullable=False),
        sa.Column("closed_loans", sa.BigInteger(), nullable=False),
        sa.Column("loans_this_year", sa.BigInteger(), nullable=False),
        sa.Column("credit_score", sa.SmallInteger(), nullable=False),
        sa.Column("payment_history", POINTS, nullable=False),
        sa.Column("utilisation", POINTS, nullable=False),
        sa.Column("track_record", POINTS, nullable=False),
        sa.Column("recent_activity", POINTS, nullable=False),
        sa.Column("approved", sa.Boolean(), nullable=False),
        sa.Column("corrected_interest_rate", RATE, nullable=True),
        sa.Column("monthly_installment", MONEY, nullable=True),
        sa.Column("reasons", postgresql.ARRAY(sa.String(length=40)), nullable=False),
        sa.Column("policy_version", sa.String(length=12), nullable=False),
        sa.Column("loan_id", sa.BigInteger(), nullable=True),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.CheckConstraint(
            "approved = (loan_id IS NOT NULL)", name=op.f("ck_credit_decisions_loan_when_approved")
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.customer_id"],
            name=op.f("fk_credit_decisions_customer_id_customers"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["loan_id"],
            ["loans.loan_id"],
            name=op.f("fk_credit_decisions_loan_id_loans"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["policy_version"],
            ["credit_policies.version"],
            name=op.f("fk_credit_decisions_policy_version_credit_policies"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("decision_id", name=op.f("pk_credit_decisions")),
    )
    # A customer's decisions, newest first (keyset pagination on decision_id).
    op.create_index(
        "ix_credit_decisions_customer_id_decision_id", "credit_decisions", ["customer_id", "decision_id"]
    )
    op.execute(
        """
        CREATE FUNCTION credit_decisions_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'credit_decisions is append-only: % refused', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER credit_decisions_append_only BEFORE UPDATE OR DELETE ON credit_decisions
        FOR EACH ROW EXECUTE FUNCTION credit_decisions_append_only()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER credit_decisions_append_only ON credit_decisions")
    op.execute("DROP FUNCTION credit_decisions_append_only()")
    op.drop_index("ix_credit_decisions_customer_id_decision_id", table_name="credit_decisions")
    op.drop_table("credit_decisions")
    op.drop_table("credit_policies")
