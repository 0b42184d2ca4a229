"""Customer rules: registration and its credit limit, reading a customer with their credit today, and
correcting their details."""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.credit.policy import CENT, CreditProfile, Policy, approved_limit_for, credit_score
from app.customers import queries
from app.customers.schemas import (
    CreditSummaryOut,
    CustomerDetailOut,
    CustomerListItemOut,
    CustomerOut,
    CustomerPatch,
    CustomerUpdateOut,
    RegisterRequest,
)
from app.db import Reader
from app.errors import Conflict, NotFound
from app.loans.schemas import ScoreBreakdownOut


async def register(session: AsyncSession, data: RegisterRequest, policy: Policy) -> CustomerOut:
    income = data.monthly_income.quantize(CENT, ROUND_HALF_UP)
    limit = approved_limit_for(income, policy)
    try:
        customer_id = await queries.insert_customer(
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
        customer_id=customer_id,
        name=f"{data.first_name} {data.last_name}",
        first_name=data.first_name,
        last_name=data.last_name,
        age=data.age,
        monthly_income=income,
        approved_limit=limit,
        phone_number=data.phone_number,
    )


def _customer_fields(row: Any) -> dict[str, Any]:
    return {
        "customer_id": row["customer_id"],
        "name": f"{row['first_name']} {row['last_name']}",
        "first_name": row["first_name"],
        "last_name": row["last_name"],
        "age": row["age"],
        "monthly_income": row["monthly_salary"],
        "approved_limit": row["approved_limit"],
        "phone_number": row["phone_number"],
    }


def _not_found(customer_id: int) -> NotFound:
    return NotFound(f"Customer {customer_id} does not exist.", field="customer_id")


async def get_customer(db: Reader, customer_id: int, today: dt.date, policy: Policy) -> CustomerDetailOut:
    row = await queries.customer_with_credit(db, customer_id, today)
    if row is None:
        raise _not_found(customer_id)
    profile = CreditProfile(
        approved_limit=row["approved_limit"],
        monthly_salary=row["monthly_salary"],
        current_debt=row["current_debt"],
        current_emis=row["current_emis"],
        emis_due=row["emis_due"],
        emis_paid_due=row["emis_paid_due"],
        closed_loans=row["closed_loans"],
        loans_this_year=row["loans_this_year"],
    )
    score = credit_score(profile, policy)
    emi_cap = (policy.max_emi_share_of_salary * profile.monthly_salary).quantize(CENT, ROUND_HALF_UP)
    return CustomerDetailOut(
        **_customer_fields(row),
        created_at=row["created_at"],
        credit=CreditSummaryOut(
            credit_score=score.score,
            score_breakdown=ScoreBreakdownOut(
                payment_history=score.payment_history,
                utilisation=score.utilisation,
                track_record=score.track_record,
                recent_activity=score.recent_activity,
            ),
            current_debt=profile.current_debt,
            available_limit=max(Decimal(0), profile.approved_limit - profile.current_debt),
            current_emis=profile.current_emis,
            emi_headroom=max(Decimal(0), emi_cap - profile.current_emis),
            active_loans=row["active_loans"],
            overdue_installments=row["overdue_installments"],
            days_past_due=row["days_past_due"],
        ),
    )


async def find_by_phone(db: Reader, phone_number: int) -> list[CustomerListItemOut]:
    row = await queries.by_phone(db, phone_number)
    return [] if row is None else [CustomerListItemOut(**_customer_fields(row), created_at=row["created_at"])]


async def update(
    session: AsyncSession, customer_id: int, data: CustomerPatch, policy: Policy
) -> CustomerUpdateOut:
    """Change what the body gives. A new income recomputes the approved limit by the policy's rule; the
    customer's row is locked by the UPDATE, so a decision for them waits for (and then sees) the change."""
    changes: dict[str, Any] = {
        name: getattr(data, name)
        for name in ("first_name", "last_name", "age", "phone_number")
        if name in data.model_fields_set
    }
    previous_limit: Decimal | None = None
    if "monthly_income" in data.model_fields_set:
        assert data.monthly_income is not None
        income = data.monthly_income.quantize(CENT, ROUND_HALF_UP)
        changes["monthly_salary"] = income
        changes["approved_limit"] = approved_limit_for(income, policy)
        previous_limit = await queries.approved_limit(session, customer_id)
        if previous_limit is None:
            raise _not_found(customer_id)
    try:
        row = await queries.update_customer(session, customer_id, changes)
    except IntegrityError as exc:
        if queries.PHONE_CONSTRAINT in str(exc.orig):
            raise Conflict(
                "Another customer is registered with this phone number.", field="phone_number"
            ) from None
        raise
    if row is None:
        raise _not_found(customer_id)
    recomputed = previous_limit is not None
    return CustomerUpdateOut(
        **_customer_fields(row),
        approved_limit_recomputed=recomputed,
        previous_approved_limit=previous_limit,
    )
