"""Customer rules: registration and its credit limit."""

from __future__ import annotations

from decimal import ROUND_HALF_UP

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.credit.policy import CENT, Policy, approved_limit_for
from app.customers import queries
from app.customers.schemas import CustomerOut, RegisterRequest
from app.errors import Conflict


async def register(session: AsyncSession, data: RegisterRequest, policy: Policy) -> CustomerOut:
    income = data.monthly_income.quantize(CENT, ROUND_HALF_UP)
    limit = approved_limit_for(income, policy)
    try:
        row = await queries.insert_customer(
            session,
            first_name=data.first_name,
            last_name=data.last_name,
            age=data.age,
            phone_number=data.phone_number,
            monthly_salary=income,
            approved_limit=limit,
        )
    except IntegrityError as exc:
        if queries.PHONE_CONSTRAINT in str(exc.orig):
            raise Conflict(
                "A customer with this phone number is already registered.", field="phone_number"
            ) from None
        raise
    return CustomerOut(
        customer_id=row.customer_id,
        name=f"{data.first_name} {data.last_name}",
        first_name=data.first_name,
        last_name=data.last_name,
        age=data.age,
        monthly_income=income,
        approved_limit=limit,
        phone_number=data.phone_number,
    )
