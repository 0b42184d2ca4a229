"""Test data written straight through the ORM, inside the test's rolled-back transaction."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from app.credit.dates import add_months
from app.credit.schedule import imported_servicing
from app.models import Customer, Loan

_phones = itertools.count(7_000_000_000)


async def add_customer(
    session: AsyncSession,
    *,
    monthly_salary: Decimal | int = 50_000,
    approved_limit: Decimal | int = 1_800_000,
    age: int | None = 35,
    customer_id: int | None = None,
) -> Customer:
    customer = Customer(
        first_name="Ravi",
        last_name="Kumar",
        age=age,
        phone_number=next(_phones),
        monthly_salary=Decimal(monthly_salary),
        approved_limit=Decimal(approved_limit),
    )
    if customer_id is not None:
        customer.customer_id = customer_id
    session.add(customer)
    await session.flush()
    return customer


async def add_loan(
    session: AsyncSession,
    customer: Customer,
    *,
    loan_amount: Decimal | int = 100_000,
    tenure: int = 12,
    interest_rate: Decimal | str = "10",
    monthly_installment: Decimal | int = 9_000,
    emis_paid_on_time: int = 0,
    start_date: dt.date,
    end_date: dt.date | None = None,
    loan_id: int | None = None,
) -> Loan:
    # The servicing state an import gives a loan with this history (no payments through the API).
    servicing = imported_servicing(
        Decimal(loan_amount),
        Decimal(interest_rate),
        tenure,
        start_date,
        Decimal(monthly_installment),
        emis_paid_on_time,
    )
    loan = Loan(
        customer_id=customer.customer_id,
        loan_amount=Decimal(loan_amount),
        tenure=tenure,
        interest_rate=Decimal(interest_rate),
        monthly_installment=Decimal(monthly_installment),
        emis_paid_on_time=emis_paid_on_time,
        start_date=start_date,
        end_date=end_date or add_months(start_date, tenure),
        outstanding_principal=servicing.outstanding,
        installments_paid=servicing.installments_paid,
        amount_paid=servicing.amount_paid,
        repayments_left=servicing.repayments_left,
        paid_off_on=servicing.paid_off_on,
    )
    if loan_id is not None:
        loan.loan_id = loan_id
    session.add(loan)
    await session.flush()
    return loan
