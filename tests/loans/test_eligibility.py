from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import pytest
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from app.credit.dates import add_months
from app.credit.policy import LoanRecord, profile_from_loans
from app.loans import queries
from tests.factories import add_customer, add_loan

TODAY = dt.date(2026, 6, 15)  # tests/conftest.py pins the app's clock to this day


def loan_request(
    customer_id: int, amount: int | str = 100_000, rate: float | str = 10, tenure: int = 24
) -> dict:
    return {"customer_id": customer_id, "loan_amount": amount, "interest_rate": rate, "tenure": tenure}


async def test_new_customer_scores_85_and_is_approved_at_the_requested_rate(
    client: AsyncClient, make_customer
) -> None:
    customer = await make_customer(62500)
    response = await client.post(
        "/api/check-eligibility", json=loan_request(customer["customer_id"], rate=8, tenure=12)
    )
    assert response.status_code == 200
    assert response.json() == {
        "customer_id": customer["customer_id"],
        "approval": True,
        "interest_rate": 8,
        "corrected_interest_rate": 8,
        "tenure": 12,
        "monthly_installment": 8698.84,
        "credit_score": 85,
        "reasons": ["within_policy"],
        "score_breakdown": {
            "payment_history": 35,
            "utilisation": 30,
            "track_record": 0,
            "recent_activity": 20,
        },
    }


async def test_mid_score_raises_the_rate_to_the_slab_floor(
    client: AsyncClient, session: AsyncSession
) -> None:
    # payment history 0/12 -> 0, utilisation 30 x (1 - 1M/2M) = 15, no closed loans, none this year -> 20: 35.
    customer = await add_customer(session, monthly_salary=100_000, approved_limit=2_000_000)
    await add_loan(session, customer, loan_amount=1_000_000, tenure=24, start_date=dt.date(2025, 6, 15))
    response = await client.post("/api/check-eligibility", json=loan_request(customer.customer_id, rate=10))
    body = response.json()
    assert (body["credit_score"], body["approval"], body["corrected_interest_rate"]) == (35, True, 12)
    assert body["reasons"] == ["rate_corrected"]
    assert body["monthly_installment"] == 4707.35  # 100000 at 12% over 24 months


async def test_low_score_slab_floor_is_16(client: AsyncClient, session: AsyncSession) -> None:
    # history 0, utilisation 30 x 0.5 = 15, this year: 4 loans -> 0, closed 0: 15.
    customer = await add_customer(session, monthly_salary=500_000, approved_limit=4_000_000)
    for month in (1, 2, 3, 4):
        await add_loan(session, customer, loan_amount=500_000, tenure=24, start_date=dt.date(2026, month, 1))
    body = (
        await client.post("/api/check-eligibility", json=loan_request(customer.customer_id, rate=13))
    ).json()
    assert (body["credit_score"], body["corrected_interest_rate"], body["approval"]) == (15, 16, True)


async def test_debt_over_limit_scores_zero_and_reports_the_evaluated_terms(
    client: AsyncClient, session: AsyncSession
) -> None:
    customer = await add_customer(session, approved_limit=100_000)
    await add_loan(session, customer, loan_amount=150_000, tenure=36, start_date=dt.date(2025, 1, 1))
    response = await client.post("/api/check-eligibility", json=loan_request(customer.customer_id))
    body = response.json()
    assert response.status_code == 200
    assert body["approval"] is False and body["credit_score"] == 0
    assert "debt_over_limit" in body["reasons"]
    assert body["corrected_interest_rate"] is None and body["monthly_installment"] is None
    assert (body["interest_rate"], body["tenure"]) == (10, 24)


async def test_loan_over_the_remaining_limit_is_rejected_with_its_terms(
    client: AsyncClient, make_customer
) -> None:
    customer = await make_customer(50000)  # limit 1,800,000
    body = (
        await client.post(
            "/api/check-eligibility", json=loan_request(customer["customer_id"], 1_800_001, tenure=600)
        )
    ).json()
    assert body["approval"] is False
    assert body["reasons"] == ["limit_exceeded"]
    assert body["corrected_interest_rate"] == 10 and body["monthly_installment"] is not None
    at_limit = (
        await client.post(
            "/api/check-eligibility", json=loan_request(customer["customer_id"], 1_800_000, tenure=600)
        )
    ).json()
    assert at_limit["approval"] is True


async def test_installments_over_half_the_salary_are_rejected(
    client: AsyncClient, session: AsyncSession
) -> None:
    customer = await add_customer(session, monthly_salary=20_000, approved_limit=5_000_000)
    await add_loan(
        session,
        customer,
        loan_amount=100_000,
        monthly_installment=9_000,
        tenure=24,
        emis_paid_on_time=12,
        start_date=dt.date(2025, 6, 1),
    )
    # 9000 + 1000 = 10000 = exactly half: allowed; one more cent of installment is not.
    ok = (
        await client.post("/api/check-eligibility", json=loan_request(customer.customer_id, 12_000, 0, 12))
    ).json()
    assert (ok["monthly_installment"], ok["approval"]) == (1000, True)
    too_much = (
        await client.post(
            "/api/check-eligibility", json=loan_request(customer.customer_id, "12000.12", 0, 12)
        )
    ).json()
    assert (too_much["monthly_installment"], too_much["approval"]) == (1000.01, False)
    assert too_much["reasons"] == ["emi_over_half_salary"]


async def test_zero_rate_installment_is_principal_over_tenure(client: AsyncClient, make_customer) -> None:
    customer = await make_customer(50000)
    body = (
        await client.post("/api/check-eligibility", json=loan_request(customer["customer_id"], 100_000, 0, 3))
    ).json()
    assert body["monthly_installment"] == 33333.33


async def test_unknown_customer_is_404(client: AsyncClient) -> None:
    response = await client.post("/api/check-eligibility", json=loan_request(987654321))
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


def random_loans(rng: random.Random) -> list[dict]:
    loans = []
    for _ in range(rng.randint(0, 12)):
        # Month ends and 29 February are where calendar-month arithmetic usually goes wrong.
        year, month = rng.randint(2010, 2027), rng.randint(1, 12)
        last_day = (add_months(dt.date(year, month, 1), 1) - dt.timedelta(days=1)).day
        start = dt.date(year, month, min(rng.choice([1, 15, 28, 29, 30, 31]), last_day))
        tenure = rng.randint(1, 180)
        end = add_months(start, tenure) + dt.timedelta(days=rng.choice([0, 0, 0, 3]))
        loans.append(
            {
                "loan_amount": Decimal(rng.randint(1, 5_000_000)) / 100 * 100,
                "tenure": tenure,
                "monthly_installment": Decimal(rng.randint(100, 9_000_000)) / 100,
                "emis_paid_on_time": rng.randint(0, tenure),
                "start_date": start,
                "end_date": end,
            }
        )
    return loans


@pytest.mark.parametrize("seed", range(12))
async def test_sql_aggregates_match_the_policy_computed_in_python(session: AsyncSession, seed: int) -> None:
    """The one-statement SQL profile must equal what the pure policy computes from the loans themselves."""
    rng = random.Random(seed)
    customer = await add_customer(session, monthly_salary=80_000, approved_limit=3_000_000)
    loans = random_loans(rng)
    records = []
    for index, loan in enumerate(loans):
        stored = await add_loan(session, customer, **loan)
        if index == 0 or rng.random() < 0.3:  # repaid early: closed from the day it was paid off
            paid = rng.randint(1, stored.tenure)
            stored.outstanding_principal, stored.repayments_left = Decimal(0), 0
            stored.installments_paid, stored.emis_paid_on_time = paid, rng.randint(0, paid)
            stored.paid_off_on = stored.last_paid_on = stored.start_date + dt.timedelta(
                days=rng.randint(0, 4000)
            )
            await session.flush()
        records.append(
            LoanRecord(
                **{**loan, "emis_paid_on_time": stored.emis_paid_on_time},
                installments_paid=stored.installments_paid,
                paid_off_on=stored.paid_off_on,
            )
        )
    for today in (TODAY, dt.date(2026, 2, 28), dt.date(2024, 2, 29), dt.date(2031, 12, 31)):
        from_sql = await queries.credit_profile(session, customer.customer_id, today)
        from_python = profile_from_loans(
            records,
            approved_limit=Decimal(3_000_000),
            monthly_salary=Decimal(80_000),
            today=today,
        )
        assert from_sql == from_python, (seed, today)
