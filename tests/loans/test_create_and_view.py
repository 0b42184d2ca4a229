from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from httpx import AsyncClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Loan
from tests.factories import add_customer, add_loan
from tests.loans.test_eligibility import TODAY, loan_request


async def count_loans(session: AsyncSession, customer_id: int) -> int:
    return (await session.execute(select(func.count()).where(Loan.customer_id == customer_id))).scalar_one()


async def test_approved_loan_is_stored_at_the_corrected_rate(
    client: AsyncClient, session: AsyncSession
) -> None:
    customer = await add_customer(session, monthly_salary=100_000, approved_limit=2_000_000)
    await add_loan(session, customer, loan_amount=1_000_000, tenure=24, start_date=dt.date(2025, 6, 15))
    response = await client.post("/api/create-loan", json=loan_request(customer.customer_id, rate=10))
    assert response.status_code == 201
    body = response.json()
    assert body == {
        "loan_id": body["loan_id"],
        "customer_id": customer.customer_id,
        "loan_approved": True,
        "message": body["message"],
        "monthly_installment": 4707.35,
        "reasons": ["rate_corrected"],
        "decision_id": body["decision_id"],
    }
    assert "12.00%" in body["message"]
    loan = (await session.execute(select(Loan).where(Loan.loan_id == body["loan_id"]))).scalar_one()
    assert (loan.loan_amount, loan.interest_rate, loan.monthly_installment) == (
        Decimal("100000.00"),
        Decimal("12.00"),
        Decimal("4707.35"),
    )
    assert (loan.tenure, loan.emis_paid_on_time, loan.start_date, loan.end_date) == (
        24,
        0,
        TODAY,
        dt.date(2028, 6, 15),
    )


async def test_rejected_loan_answers_200_and_stores_nothing(
    client: AsyncClient, session: AsyncSession
) -> None:
    customer = await add_customer(session, approved_limit=100_000)
    response = await client.post("/api/create-loan", json=loan_request(customer.customer_id, 100_001))
    assert response.status_code == 200
    body = response.json()
    assert (body["loan_id"], body["loan_approved"], body["monthly_installment"]) == (None, False, None)
    assert body["reasons"] == ["limit_exceeded"] and "limit" in body["message"].lower()
    assert await count_loans(session, customer.customer_id) == 0


@pytest.mark.parametrize(
    ("amount", "rate", "tenure"),
    [(100_000, 10, 24), (1_700_000, 5, 600), (1_800_001, 5, 600), (400_000, 0, 12), (100_000, "99.99", 1)],
)
async def test_create_loan_approves_exactly_when_eligibility_does(
    client: AsyncClient, make_customer, amount: int, rate: float | str, tenure: int
) -> None:
    customer = await make_customer(50000)
    request = loan_request(customer["customer_id"], amount, rate, tenure)
    eligibility = (await client.post("/api/check-eligibility", json=request)).json()
    created = (await client.post("/api/create-loan", json=request)).json()
    assert created["loan_approved"] is eligibility["approval"]
    assert created["monthly_installment"] == (
        eligibility["monthly_installment"] if eligibility["approval"] else None
    )


async def test_create_loan_for_unknown_customer_is_404(client: AsyncClient) -> None:
    response = await client.post("/api/create-loan", json=loan_request(10**12))
    assert response.status_code == 404


async def test_created_loan_counts_against_the_next_decision(client: AsyncClient, make_customer) -> None:
    customer = await make_customer(50000)  # limit 1,800,000
    first = await client.post(
        "/api/create-loan", json=loan_request(customer["customer_id"], 1_000_000, 10, 600)
    )
    assert first.status_code == 201
    second = await client.post(
        "/api/create-loan", json=loan_request(customer["customer_id"], 900_000, 10, 600)
    )
    assert second.json()["loan_approved"] is False
    assert "limit_exceeded" in second.json()["reasons"]


async def test_view_loan_returns_the_loan_and_its_customer(client: AsyncClient, make_customer) -> None:
    customer = await make_customer(50000, first_name="Meera", age=44)
    created = (
        await client.post("/api/create-loan", json=loan_request(customer["customer_id"], "150000.50", 11, 36))
    ).json()
    response = await client.get(f"/api/view-loan/{created['loan_id']}")
    assert response.status_code == 200
    assert response.json() == {
        "loan_id": created["loan_id"],
        "customer": {
            "id": customer["customer_id"],
            "first_name": "Meera",
            "last_name": "Rao",
            "phone_number": customer["phone_number"],
            "age": 44,
        },
        "loan_amount": 150000.5,
        "interest_rate": 11,
        "monthly_installment": created["monthly_installment"],
        "tenure": 36,
        "outstanding_principal": 150000.5,
        "amount_paid": 0.0,
        "loan_status": "active",
    }
    assert (await client.get(f"/api/view-loan/{created['loan_id']}/")).status_code == 200


async def test_view_unknown_loan_is_404(client: AsyncClient) -> None:
    response = await client.get("/api/view-loan/99999999")
    assert response.status_code == 404 and response.json()["detail"] == "Loan 99999999 does not exist."


async def test_view_loans_lists_current_by_default_and_others_on_request(
    client: AsyncClient, session: AsyncSession
) -> None:
    customer = await add_customer(session)
    closed = await add_loan(session, customer, tenure=12, start_date=dt.date(2020, 1, 10))
    ends_today = await add_loan(session, customer, tenure=12, start_date=dt.date(2025, 6, 15))
    running = await add_loan(
        session,
        customer,
        tenure=36,
        start_date=dt.date(2025, 3, 16),
        monthly_installment=Decimal("3321.45"),
        interest_rate="8.5",
    )
    url = f"/api/view-loans/{customer.customer_id}"

    current = (await client.get(url)).json()
    assert [loan["loan_id"] for loan in current] == [ends_today.loan_id, running.loan_id]
    # Nothing was ever paid on either: every installment is still to pay, and both are in arrears.
    assert current[0]["repayments_left"] == 12 and current[0]["loan_status"] == "overdue"
    # 3321.45 is more than the formula's EMI (3156.75): it repays the loan in 33.98 months (34 installments).
    assert current[1] == {
        "loan_id": running.loan_id,
        "loan_amount": 100000,
        "interest_rate": 8.5,
        "monthly_installment": 3321.45,
        "repayments_left": 34,
        "amount_paid": 0.0,
        "loan_status": "overdue",
    }
    assert [loan["loan_id"] for loan in (await client.get(url, params={"status": "closed"})).json()] == [
        closed.loan_id
    ]
    assert len((await client.get(url + "/", params={"status": "all"})).json()) == 3


async def test_view_loans_of_a_customer_without_loans_is_empty(client: AsyncClient, make_customer) -> None:
    customer = await make_customer()
    response = await client.get(f"/api/view-loans/{customer['customer_id']}")
    assert (response.status_code, response.json()) == (200, [])


async def test_view_loans_of_unknown_customer_is_404(client: AsyncClient) -> None:
    assert (await client.get("/api/view-loans/424242424")).status_code == 404
