"""All SQL about customers."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from asyncpg import Record
from sqlalchemy import RowMapping, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import ReadsWith, Statement, as_reader
from app.loans.queries import CURRENT_SQL, ELAPSED_SQL, INSTALLMENTS_SQL
from app.models import Customer

PHONE_CONSTRAINT = "uq_customers_phone_number"


async def insert_customer(
    session: AsyncSession,
    *,
    first_name: str,
    last_name: str,
    age: int | None,
    phone_number: int,
    monthly_salary: Decimal,
    approved_limit: Decimal,
) -> int:
    """The new customer's id."""
    statement = (
        insert(Customer)
        .values(
            first_name=first_name,
            last_name=last_name,
            age=age,
            phone_number=phone_number,
            monthly_salary=monthly_salary,
            approved_limit=approved_limit,
        )
        .returning(Customer.customer_id)
    )
    return (await session.execute(statement)).scalar_one()


_CUSTOMER_COLUMNS = """c.customer_id, c.first_name, c.last_name, c.age, c.phone_number, c.monthly_salary,
       c.approved_limit, c.created_at"""

# Due date of installment k: the start date plus k months (PostgreSQL clamps to the month's end, as
# app.credit.dates.add_months does). Installments due before today: k_max below, from the month count.
_MONTHS = (
    "((extract(year from :today) - extract(year from l.start_date)) * 12 + extract(month from :today)"
    " - extract(month from l.start_date))::int"
)
_DUE_BEFORE_TODAY = f"""({_MONTHS} - CASE WHEN l.start_date + make_interval(months => {_MONTHS}) < :today
                                     THEN 0 ELSE 1 END)"""
_OPEN = "l.paid_off_on IS NULL"

# The customer, every aggregate the credit policy needs, and their arrears: one statement, one customer's
# loans from the covering index (app.loans.queries.PROFILE_SQL's aggregates, plus three).
_CUSTOMER_WITH_CREDIT = Statement.compile(
    text(f"""
SELECT {_CUSTOMER_COLUMNS},
       coalesce(sum(l.loan_amount) FILTER (WHERE {CURRENT_SQL}), 0) AS current_debt,
       coalesce(sum(l.monthly_installment) FILTER (WHERE {CURRENT_SQL}), 0) AS current_emis,
       coalesce(sum(least({INSTALLMENTS_SQL}, {ELAPSED_SQL})), 0)::bigint AS emis_due,
       coalesce(sum(least(l.emis_paid_on_time, {INSTALLMENTS_SQL}, {ELAPSED_SQL})), 0)::bigint
           AS emis_paid_due,
       count(l.customer_id) FILTER (WHERE NOT {CURRENT_SQL}) AS closed_loans,
       count(l.customer_id) FILTER (WHERE l.start_date >= :year_start AND l.start_date < :next_year)
           AS loans_this_year,
       count(l.customer_id) FILTER (WHERE {CURRENT_SQL}) AS active_loans,
       coalesce(sum(greatest(0, least(l.installments_paid + l.repayments_left, {_DUE_BEFORE_TODAY})
                                - l.installments_paid)) FILTER (WHERE {_OPEN}), 0)::bigint
           AS overdue_installments,
       coalesce(max(greatest(0, :today - (l.start_date
                                          + make_interval(months => l.installments_paid + 1))::date))
                FILTER (WHERE {_OPEN}), 0) AS days_past_due
FROM customers c
LEFT JOIN loans l ON l.customer_id = c.customer_id
WHERE c.customer_id = :customer_id
GROUP BY c.customer_id
""")
)


async def customer_with_credit(db: ReadsWith, customer_id: int, today: dt.date) -> Record | None:
    return await as_reader(db).fetchrow(
        _CUSTOMER_WITH_CREDIT,
        customer_id=customer_id,
        today=today,
        year_start=dt.date(today.year, 1, 1),
        next_year=dt.date(today.year + 1, 1, 1),
    )


_BY_PHONE = Statement.compile(
    text(f"SELECT {_CUSTOMER_COLUMNS} FROM customers c WHERE c.phone_number = :phone_number")
)


async def by_phone(db: ReadsWith, phone_number: int) -> Record | None:
    return await as_reader(db).fetchrow(_BY_PHONE, phone_number=phone_number)


async def update_customer(
    session: AsyncSession, customer_id: int, changes: dict[str, Any]
) -> RowMapping | None:
    """Apply `changes` (column -> value); the customer as it is now, or None when there is none."""
    statement = (
        update(Customer)
        .where(Customer.customer_id == customer_id)
        .values(**changes)
        .returning(
            Customer.customer_id,
            Customer.first_name,
            Customer.last_name,
            Customer.age,
            Customer.phone_number,
            Customer.monthly_salary,
            Customer.approved_limit,
            Customer.created_at,
        )
    )
    return (await session.execute(statement)).mappings().first()


async def approved_limit(session: AsyncSession, customer_id: int) -> Decimal | None:
    """The customer's limit before a change, row-locked until the transaction ends (None: no customer)."""
    statement = select(Customer.approved_limit).where(Customer.customer_id == customer_id).with_for_update()
    limit: Decimal | None = (await session.execute(statement)).scalar_one_or_none()
    return limit
