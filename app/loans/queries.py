"""All SQL about loans. Each function is one statement (one round trip).

The reads of the hot endpoints (eligibility, view-loan, view-loans) are compiled once at import and run
through app.db.Reader on the driver; the writes of create-loan go through its Session.
"""

from __future__ import annotations

import datetime as dt

from asyncpg import Record
from sqlalchemy import Date, bindparam, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.credit.policy import CreditProfile
from app.db import ReadsWith, Statement, as_reader
from app.import_locks import IMPORT_RUNNING_KEY
from app.models import Customer, Loan

# Months elapsed exactly as the policy counts them (PostgreSQL age(): whole calendar months).
ELAPSED_SQL = """greatest(0, (extract(year from age(:today, l.start_date)) * 12
                   + extract(month from age(:today, l.start_date)))::int)"""

# A loan is current until its end date, unless paid off before (app.credit.policy.profile_from_loans).
CURRENT_SQL = "(l.end_date >= :today AND (l.paid_off_on IS NULL OR l.paid_off_on > :today))"
# Installments a loan has: tenure, or once paid off those it took.
INSTALLMENTS_SQL = "(CASE WHEN l.paid_off_on <= :today THEN l.installments_paid ELSE l.tenure END)"

# The customer and every aggregate the credit policy needs, in a single statement. The loans side is
# answered from ix_loans_customer_id_end_date (an index-only scan over one customer's loans).
PROFILE_SQL = text(f"""
SELECT c.monthly_salary,
       c.approved_limit,
       coalesce(sum(l.loan_amount) FILTER (WHERE {CURRENT_SQL}), 0) AS current_debt,
       coalesce(sum(l.monthly_installment) FILTER (WHERE {CURRENT_SQL}), 0) AS current_emis,
       coalesce(sum(least({INSTALLMENTS_SQL}, {ELAPSED_SQL})), 0)::bigint AS emis_due,
       coalesce(sum(least(l.emis_paid_on_time, {INSTALLMENTS_SQL}, {ELAPSED_SQL})), 0)::bigint
           AS emis_paid_due,
       count(l.customer_id) FILTER (WHERE NOT {CURRENT_SQL}) AS closed_loans,
       count(l.customer_id) FILTER (WHERE l.start_date >= :year_start AND l.start_date < :next_year)
           AS loans_this_year
FROM customers c
LEFT JOIN loans l ON l.customer_id = c.customer_id
WHERE c.customer_id = :customer_id
GROUP BY c.customer_id
""")
_PROFILE = Statement.compile(PROFILE_SQL)


async def credit_profile(db: ReadsWith, customer_id: int, today: dt.date) -> CreditProfile | None:
    row = await as_reader(db).fetchrow(
        _PROFILE,
        customer_id=customer_id,
        today=today,
        year_start=dt.date(today.year, 1, 1),
        next_year=dt.date(today.year + 1, 1, 1),
    )
    if row is None:
        return None
    return CreditProfile(
        approved_limit=row["approved_limit"],
        monthly_salary=row["monthly_salary"],
        current_debt=row["current_debt"],
        current_emis=row["current_emis"],
        emis_due=row["emis_due"],
        emis_paid_due=row["emis_paid_due"],
        closed_loans=row["closed_loans"],
        loans_this_year=row["loans_this_year"],
    )


# One round trip: is an import that can change this customer's history running, and if not, the row lock.
# The import check comes first and takes no row lock: while an import runs, its loans hold a key-share
# lock on every customer they reference until it commits, and FOR UPDATE would wait there until
# lock_timeout. A customer an import can touch (it created them, or nobody can tell: see migration 0003)
# tries the import lock, shared and never waiting; held until this transaction ends, it keeps imports
# from starting meanwhile. Only when clear is the row locked (OFFSET 0 keeps the planner from merging
# the two levels, which would evaluate the try-lock again).
_LOCK_CUSTOMER = text(f"""
SELECT g.clear,
       (SELECT c.customer_id FROM customers c WHERE c.customer_id = g.customer_id AND g.clear FOR UPDATE)
           IS NOT NULL AS locked
FROM (
    SELECT customer_id,
           CASE WHEN source_customer_id IS NOT NULL OR origin_unknown
                THEN pg_try_advisory_xact_lock_shared({IMPORT_RUNNING_KEY}) ELSE true END AS clear
    FROM customers WHERE customer_id = :customer_id
    OFFSET 0
) g
""")


async def lock_customer(session: AsyncSession, customer_id: int) -> bool | None:
    """Lock the customer's row until the transaction ends. None when there is no such customer; False,
    at once and with no lock, while an import that can change their history runs.

    A separate statement on purpose: under READ COMMITTED the next statement takes a fresh snapshot,
    so the loans read after the lock include any loan a concurrent request committed while we waited.
    """
    row = (await session.execute(_LOCK_CUSTOMER, {"customer_id": customer_id})).first()
    if row is None:
        return None
    if not row.clear:
        return False
    return True if row.locked else None  # None: deleted while we waited for the lock


_LOAN_WITH_CUSTOMER = Statement.compile(
    select(
        Loan.loan_id,
        Loan.loan_amount,
        Loan.interest_rate,
        Loan.monthly_installment,
        Loan.tenure,
        Loan.start_date,
        Loan.outstanding_principal,
        Loan.amount_paid,
        Loan.installments_paid,
        Loan.paid_off_on,
        Customer.customer_id,
        Customer.first_name,
        Customer.last_name,
        Customer.phone_number,
        Customer.age,
    )
    .join(Customer, Customer.customer_id == Loan.customer_id)
    .where(Loan.loan_id == bindparam("loan_id"))
)


async def loan_with_customer(db: ReadsWith, loan_id: int) -> Record | None:
    return await as_reader(db).fetchrow(_LOAN_WITH_CUSTOMER, loan_id=loan_id)


def _customer_loans(current: bool | None) -> Statement:
    join_on = Loan.customer_id == Customer.customer_id
    today = bindparam("today", type_=Date())
    # As the credit policy counts them (CURRENT_SQL above): current until the end date unless paid off before.
    if current is True:
        join_on &= (Loan.end_date >= today) & (Loan.paid_off_on.is_(None) | (Loan.paid_off_on > today))
    elif current is False:
        join_on &= (Loan.end_date < today) | (Loan.paid_off_on <= today)
    return Statement.compile(
        select(
            Customer.customer_id,
            Loan.loan_id,
            Loan.loan_amount,
            Loan.interest_rate,
            Loan.monthly_installment,
            Loan.start_date,
            Loan.installments_paid,
            Loan.repayments_left,
            Loan.amount_paid,
            Loan.paid_off_on,
        )
        .select_from(Customer)
        .outerjoin(Loan, join_on)
        .where(Customer.customer_id == bindparam("customer_id"))
        .order_by(Loan.loan_id)
    )


_CUSTOMER_LOANS = {current: _customer_loans(current) for current in (True, False, None)}


async def customer_loans(
    db: ReadsWith, customer_id: int, today: dt.date, *, current: bool | None
) -> list[Record]:
    """The customer's loans (current, closed or all), in one statement.

    An unknown customer gives no rows; a known one with no matching loans gives a single row whose
    loan columns are NULL, so the caller can tell the two apart without a second query.
    """
    statement = _CUSTOMER_LOANS[current]
    # Every variant takes the same arguments; `today` is simply unused by "all".
    return await as_reader(db).fetch(statement, customer_id=customer_id, today=today)
