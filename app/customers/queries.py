"""All SQL about customers."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

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
) -> Row[tuple[int]]:
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
    return (await session.execute(statement)).one()
