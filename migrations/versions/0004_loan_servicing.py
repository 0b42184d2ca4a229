"""loan servicing: payments, and each loan's servicing state

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 19:20:00

A `payments` table (one row per installment settled through the API) and the servicing columns of `loans`:
outstanding_principal, installments_paid, amount_paid, repayments_left, paid_off_on, last_paid_on.

Loans already stored get the state an import gives a loan (app.credit.schedule.imported_servicing): their
first emis_paid_on_time installments paid, amortised with the formula's EMI. A loan created through the API
has emis_paid_on_time = 0 (nothing could record a payment before this revision), so it owes its whole
amount. The state is computed here in batches of 10,000 loans, in integer cents (about 25 us a loan).
The covering index of the hot reads is rebuilt with the servicing columns it now has to answer.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.credit.schedule import imported_servicing

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 10_000
MONEY = sa.Numeric(precision=14, scale=2)

_INDEX_INCLUDE = [
    "loan_amount",
    "monthly_installment",
    "tenure",
    "emis_paid_on_time",
    "start_date",
    "interest_rate",
]
_SERVICING_INCLUDE = ["paid_off_on", "installments_paid", "repayments_left", "amount_paid"]

_CHECKS = {
    "outstanding_within_amount": "outstanding_principal BETWEEN 0 AND loan_amount",
    "installments_paid_within_tenure": "installments_paid BETWEEN 0 AND tenure",
    "repayments_left_within_tenure": "repayments_left >= 0 AND installments_paid + repayments_left <= tenure",
    "amount_paid_non_negative": "amount_paid >= 0",
    "paid_off_when_repaid": "(outstanding_principal = 0) = (paid_off_on IS NOT NULL)"
    " AND (outstanding_principal = 0) = (repayments_left = 0)",
    "paid_after_start": "last_paid_on >= start_date",
}

_UPDATE = sa.text(
    """
    UPDATE loans l
    SET outstanding_principal = v.outstanding, installments_paid = v.paid, amount_paid = v.amount_paid,
        repayments_left = v.left_, paid_off_on = v.paid_off_on
    FROM unnest(CAST(:ids AS bigint[]), CAST(:outstanding AS numeric[]), CAST(:paid AS integer[]),
                CAST(:amount_paid AS numeric[]), CAST(:left_ AS integer[]), CAST(:paid_off_on AS date[]))
         AS v(loan_id, outstanding, paid, amount_paid, left_, paid_off_on)
    WHERE l.loan_id = v.loan_id
    """
)


def _fill_servicing_state() -> None:
    bind = op.get_bind()
    after = 0
    while True:
        rows = bind.execute(
            sa.text(
                """
                SELECT loan_id, loan_amount, interest_rate, tenure, start_date, monthly_installment,
                       emis_paid_on_time
                FROM loans WHERE loan_id > :after ORDER BY loan_id LIMIT :batch
                """
            ),
            {"after": after, "batch": BATCH},
        ).all()
        if not rows:
            return
        states = [
            imported_servicing(
                r.loan_amount,
                r.interest_rate,
                r.tenure,
                r.start_date,
                r.monthly_installment,
                r.emis_paid_on_time,
            )
            for r in rows
        ]
        bind.execute(
            _UPDATE,
            {
                "ids": [r.loan_id for r in rows],
                "outstanding": [s.outstanding for s in states],
                "paid": [s.installments_paid for s in states],
                "amount_paid": [s.amount_paid for s in states],
                "left_": [s.repayments_left for s in states],
                "paid_off_on": [s.paid_off_on for s in states],
            },
        )
        after = rows[-1].loan_id


def upgrade() -> None:
    op.add_column("loans", sa.Column("outstanding_principal", MONEY, nullable=True))
    op.add_column("loans", sa.Column("installments_paid", sa.Integer(), server_default="0", nullable=False))
    op.add_column(
        "loans",
        sa.Column("amount_paid", sa.Numeric(precision=18, scale=2), server_default="0", nullable=False),
    )
    op.add_column("loans", sa.Column("repayments_left", sa.Integer(), nullable=True))
    op.add_column("loans", sa.Column("paid_off_on", sa.Date(), nullable=True))
    op.add_column("loans", sa.Column("last_paid_on", sa.Date(), nullable=True))
    _fill_servicing_state()
    op.alter_column("loans", "outstanding_principal", nullable=False)
    op.alter_column("loans", "repayments_left", nullable=False)
    for name, condition in _CHECKS.items():
        op.create_check_constraint(op.f(f"ck_loans_{name}"), "loans", condition)
    op.drop_index("ix_loans_customer_id_end_date", table_name="loans")
    op.create_index(
        "ix_loans_customer_id_end_date",
        "loans",
        ["customer_id", "end_date"],
        unique=False,
        postgresql_include=_INDEX_INCLUDE + _SERVICING_INCLUDE,
    )

    op.create_table(
        "payments",
        sa.Column("payment_id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("loan_id", sa.BigInteger(), nullable=False),
        sa.Column("installment_number", sa.Integer(), nullable=False),
        sa.Column("paid_on", sa.Date(), nullable=False),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("interest", MONEY, nullable=False),
        sa.Column("principal", MONEY, nullable=False),
        sa.Column("on_time", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("installment_number > 0", name=op.f("ck_payments_installment_positive")),
        sa.CheckConstraint("amount > 0", name=op.f("ck_payments_amount_positive")),
        sa.CheckConstraint("interest >= 0 AND principal >= 0", name=op.f("ck_payments_parts_non_negative")),
        sa.CheckConstraint("amount = interest + principal", name=op.f("ck_payments_parts_add_up")),
        sa.ForeignKeyConstraint(
            ["loan_id"], ["loans.loan_id"], name=op.f("fk_payments_loan_id_loans"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("payment_id", name=op.f("pk_payments")),
    )
    op.create_index(
        "uq_payments_loan_id_installment_number",
        "payments",
        ["loan_id", "installment_number"],
        unique=True,
        postgresql_include=["payment_id", "paid_on", "amount", "interest", "principal", "on_time"],
    )


def downgrade() -> None:
    op.drop_index("uq_payments_loan_id_installment_number", table_name="payments")
    op.drop_table("payments")
    op.drop_index("ix_loans_customer_id_end_date", table_name="loans")
    op.create_index(
        "ix_loans_customer_id_end_date",
        "loans",
        ["customer_id", "end_date"],
        unique=False,
        postgresql_include=_INDEX_INCLUDE,
    )
    for name in _CHECKS:
        op.drop_constraint(op.f(f"ck_loans_{name}"), "loans", type_="check")
    for column in ("last_paid_on", "paid_off_on", "repayments_left", "amount_paid", "installments_paid"):
        op.drop_column("loans", column)
    op.drop_column("loans", "outstanding_principal")
