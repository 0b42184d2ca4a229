"""All SQL of loan servicing. Each function is one statement (one round trip)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from asyncpg import Record
from sqlalchemy import RowMapping, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import ReadsWith, Statement, as_reader
from app.import_locks import IMPORT_RUNNING_KEY

_SERVICING_COLUMNS = """
    l.loan_amount, l.interest_rate, l.tenure, l.start_date, l.monthly_installment, l.outstanding_principal,
    l.installments_paid, l.amount_paid, l.repayments_left, l.paid_off_on, l.last_paid_on
"""

# The loan, locked for the rest of the transaction, when it belongs to this customer. As create-loan does
# for customers (app/loans/queries.py): an imported loan can be changed by a running import, whose loans
# transaction holds the import lock; try it shared, never waiting, before taking the row lock (which would
# wait on the import's uncommitted update until lock_timeout). `clear` is false while such an import runs.
# FOR UPDATE re-reads the latest committed row once the lock is granted, so a payment queued behind
# another one works on the balance that payment left.
_LOCK_LOAN = text(f"""
SELECT g.clear, l.*
FROM (
    SELECT loan_id,
           CASE WHEN source_loan_id IS NOT NULL
                THEN pg_try_advisory_xact_lock_shared({IMPORT_RUNNING_KEY}) ELSE true END AS clear
    FROM loans WHERE loan_id = :loan_id AND customer_id = :customer_id
    OFFSET 0
) g
LEFT JOIN LATERAL (
    SELECT {_SERVICING_COLUMNS} FROM loans l WHERE l.loan_id = g.loan_id AND g.clear FOR UPDATE
) l ON true
""")


async def lock_loan(session: AsyncSession, customer_id: int, loan_id: int) -> RowMapping | None:
    """None when the customer has no such loan; a row with clear = false (and nothing locked) while an
    import that can change the loan runs; otherwise the locked loan's servicing columns.

    Through the session, not app.db.Reader: the session's transaction must have begun, or the lock would
    end with the statement."""
    result = await session.execute(_LOCK_LOAN, {"customer_id": customer_id, "loan_id": loan_id})
    return result.mappings().first()


# The payment and the loan's new state, in one statement.
_RECORD_PAYMENT = text("""
WITH payment AS (
    INSERT INTO payments (loan_id, installment_number, paid_on, amount, interest, principal, on_time)
    VALUES (:loan_id, :installment_number, :paid_on, :amount, :interest, :principal, :on_time)
    RETURNING payment_id
)
UPDATE loans
SET outstanding_principal = :outstanding,
    installments_paid = :installment_number,
    amount_paid = amount_paid + :amount,
    monthly_installment = :monthly_installment,
    emis_paid_on_time = emis_paid_on_time + CASE WHEN :on_time THEN 1 ELSE 0 END,
    repayments_left = :repayments_left,
    paid_off_on = CASE WHEN CAST(:outstanding AS numeric) = 0 THEN CAST(:paid_on AS date) END,
    last_paid_on = :paid_on
WHERE loan_id = :loan_id
RETURNING (SELECT payment_id FROM payment) AS payment_id
""")


async def record_payment(
    session: AsyncSession,
    *,
    loan_id: int,
    installment_number: int,
    paid_on: dt.date,
    amount: Decimal,
    interest: Decimal,
    principal: Decimal,
    on_time: bool,
    outstanding: Decimal,
    monthly_installment: Decimal,
    repayments_left: int,
) -> int:
    values = {
        "loan_id": loan_id,
        "installment_number": installment_number,
        "paid_on": paid_on,
        "amount": amount,
        "interest": interest,
        "principal": principal,
        "on_time": on_time,
        "outstanding": outstanding,
        "monthly_installment": monthly_installment,
        "repayments_left": repayments_left,
    }
    payment_id: int = (await session.execute(_RECORD_PAYMENT, values)).scalar_one()
    return payment_id


# The loan and all its payments in one round trip and one row: the payments' `packed` values (each the
# payment in app.servicing.rows.PAYMENT's 33 bytes, computed by PostgreSQL when it was stored: migration
# 0006) concatenated, read from their index alone; NULL when there are none. Not sorted:
# app.servicing.rows places each by its installment number, which also checks each was paid once.
# Why: as a row per payment (the loan's row first, then sorted), a statement of 180 payments cost asyncpg
# about 1 µs a payment to decode, and PostgreSQL a sort and 0.5-0.8 µs a payment more than this; packed in
# the query rather than stored, 0.3-0.5 µs a payment more (bench/PROFILING.md, "Eighth look").
_STATEMENT = Statement.compile(
    text(f"""
SELECT {_SERVICING_COLUMNS}, p.payments
FROM loans l
LEFT JOIN LATERAL (
    SELECT string_agg(packed, ''::bytea) AS payments FROM payments WHERE loan_id = l.loan_id
) p ON true
WHERE l.loan_id = :loan_id AND l.customer_id = :customer_id
""")
)


async def loan_statement(db: ReadsWith, customer_id: int, loan_id: int) -> Record | None:
    """The loan's servicing columns and `payments` (see above); None when the customer has no such loan."""
    return await as_reader(db).fetchrow(_STATEMENT, customer_id=customer_id, loan_id=loan_id)
