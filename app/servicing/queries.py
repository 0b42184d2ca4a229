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


# The loan and all its payments in one round trip: the loan's row first (its payment columns NULL), then
# a row per payment in installment order with only the payment's columns. Payments come from their index
# alone (it includes their columns). Only the loan's row checks the customer: for another customer's loan
# the rows are its payments alone, and loan_statement() answers nothing, as for an unknown loan. (Joined
# to the loan to check it again, the payments cost PostgreSQL a second lookup and a join per statement.)
# (Not the loan's columns repeated on every payment row: at 16.7 payments a loan, decoding them again cost
# asyncpg 25-35 µs a statement. Not arrays: asyncpg introspects their types on every new connection, three
# more round trips.)
_LOAN_COLUMNS = len(_SERVICING_COLUMNS.split(","))
_NO_LOAN = ", ".join(["NULL"] * _LOAN_COLUMNS)
# Where a payment row's columns are: app.credit.statement.PaymentRecord's fields, in its order (figures
# in cents: the columns are numeric(14, 2), so x 100 is a whole number, exactly).
PAYMENT_COLUMNS = slice(_LOAN_COLUMNS, None)
_STATEMENT = Statement.compile(
    text(f"""
SELECT {_SERVICING_COLUMNS},
       NULL AS payment_id, NULL AS installment_number, NULL AS paid_on, NULL AS interest_cents,
       NULL AS principal_cents, NULL AS on_time
FROM loans l
WHERE l.loan_id = :loan_id AND l.customer_id = :customer_id
UNION ALL
SELECT {_NO_LOAN},
       p.payment_id, p.installment_number, p.paid_on, CAST(p.interest * 100 AS bigint),
       CAST(p.principal * 100 AS bigint), p.on_time
FROM payments p
WHERE p.loan_id = :loan_id
ORDER BY installment_number NULLS FIRST
""")
)


async def loan_statement(db: ReadsWith, customer_id: int, loan_id: int) -> list[Record]:
    """The loan's row, then its payments' (see above); empty when the customer has no such loan."""
    rows = await as_reader(db).fetch(_STATEMENT, customer_id=customer_id, loan_id=loan_id)
    if rows and rows[0][0] is None:  # no loan row (loan_amount is NOT NULL): another customer's loan
        return []
    return rows
