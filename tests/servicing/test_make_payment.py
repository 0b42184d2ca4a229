"""make-payment: the rules of issue #11 through the API, figures checked against the formula."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.credit.dates import add_months
from app.credit.policy import installment
from app.credit.schedule import monthly_interest
from tests.conftest import FIXED_NOW
from tests.servicing.conftest import Borrow, pay, statement

TODAY = FIXED_NOW.date()
PRINCIPAL, RATE = Decimal(120_000), Decimal(12)
EMI = installment(PRINCIPAL, RATE, 12)  # 10661.85


def money(value: Any) -> Decimal:
    return Decimal(str(value)).quantize(Decimal("0.01"))


async def test_paying_the_emi_settles_the_next_installment_and_keeps_the_emi(
    client: AsyncClient, borrow: Borrow
) -> None:
    loan = await borrow()
    assert money(loan["monthly_installment"]) == EMI == Decimal("10661.85")
    response = await pay(client, loan, str(EMI))
    assert response.status_code == 201, response.text
    body = response.json()
    interest = monthly_interest(PRINCIPAL, RATE)
    assert interest == Decimal("1200.00")
    assert body == {
        "payment_id": body["payment_id"],
        "customer_id": loan["customer_id"],
        "loan_id": loan["loan_id"],
        "installment_number": 1,
        "amount": float(EMI),
        "interest": 1200.0,
        "principal": float(EMI - interest),
        "paid_on": TODAY.isoformat(),
        "on_time": True,
        "outstanding_principal": float(PRINCIPAL - (EMI - interest)),
        "monthly_installment": float(EMI),
        "repayments_left": 11,
        "loan_status": "active",
    }
    second = (await pay(client, loan, str(EMI))).json()
    assert second["installment_number"] == 2
    assert money(second["interest"]) == monthly_interest(PRINCIPAL - (EMI - interest), RATE)


async def test_an_over_payment_lowers_the_emi_over_the_installments_left(
    client: AsyncClient, borrow: Borrow
) -> None:
    loan = await borrow()
    body = (await pay(client, loan, "30000")).json()
    outstanding = PRINCIPAL - (Decimal(30_000) - Decimal("1200.00"))
    assert money(body["outstanding_principal"]) == outstanding == Decimal("91200.00")
    assert money(body["monthly_installment"]) == installment(outstanding, RATE, 11) < EMI
    assert body["on_time"] is True and body["repayments_left"] == 11


async def test_an_under_payment_raises_the_emi_and_is_not_on_time(
    client: AsyncClient, borrow: Borrow
) -> None:
    loan = await borrow()
    body = (await pay(client, loan, "5000")).json()
    outstanding = PRINCIPAL - (Decimal(5000) - Decimal("1200.00"))
    assert money(body["outstanding_principal"]) == outstanding
    assert money(body["monthly_installment"]) == installment(outstanding, RATE, 11) > EMI
    assert body["on_time"] is False


async def test_amounts_outside_interest_to_payoff_are_refused_with_the_figure(
    client: AsyncClient, borrow: Borrow
) -> None:
    loan = await borrow()
    low = await pay(client, loan, "1199.99")
    assert low.status_code == 422 and low.headers["content-type"] == "application/problem+json"
    assert low.json()["minimum_amount"] == 1200.0 and low.json()["field"] == "amount"
    assert low.json()["type"].endswith("/payment-not-accepted")
    high = await pay(client, loan, "121200.01")
    assert high.status_code == 422
    assert high.json()["payoff_amount"] == 121200.0
    # Nothing was recorded by either.
    assert (await statement(client, loan))["payments"] == []


async def test_the_payoff_closes_the_loan_and_a_further_payment_is_a_conflict(
    client: AsyncClient, borrow: Borrow
) -> None:
    loan = await borrow()
    body = (await pay(client, loan, "121200")).json()
    assert body["outstanding_principal"] == 0 and body["repayments_left"] == 0
    assert body["loan_status"] == "paid_off" and body["on_time"] is True
    again = await pay(client, loan, "100")
    assert again.status_code == 409 and again.json()["type"].endswith("/loan-paid-off")
    view = (await client.get(f"/api/view-loan/{loan['loan_id']}")).json()
    assert (view["outstanding_principal"], view["amount_paid"], view["loan_status"]) == (
        0,
        121200.0,
        "paid_off",
    )


async def test_the_last_installment_takes_only_the_exact_payoff(client: AsyncClient, borrow: Borrow) -> None:
    loan = await borrow(amount=10_000, rate=12, tenure=2)
    first = (await pay(client, loan, str(installment(Decimal(10_000), RATE, 2)))).json()
    remaining = Decimal(str(first["outstanding_principal"]))
    payoff = remaining + monthly_interest(remaining, RATE)
    for wrong in (payoff - Decimal("0.01"), payoff + Decimal("0.01")):
        refused = await pay(client, loan, str(wrong))
        assert refused.status_code == 422 and money(refused.json()["payoff_amount"]) == payoff
    assert (await statement(client, loan))["next_installment"]["amount"] == float(payoff)
    last = await pay(client, loan, str(payoff))
    assert last.status_code == 201 and last.json()["loan_status"] == "paid_off"


async def test_paid_on_is_never_in_the_future_before_the_start_or_before_the_latest_payment(
    client: AsyncClient, borrow: Borrow, session: AsyncSession
) -> None:
    loan = await borrow()
    future = await pay(client, loan, str(EMI), TODAY + dt.timedelta(days=1))
    before_start = await pay(client, loan, str(EMI), TODAY - dt.timedelta(days=1))
    for refused in (future, before_start):
        assert refused.status_code == 422 and refused.json().get("field") == "paid_on", refused.text
    # A loan started earlier (back-dated in the database) takes a payment dated after its start...
    await session.execute(
        text("UPDATE loans SET start_date = :start WHERE loan_id = :loan_id"),
        {"start": TODAY - dt.timedelta(days=20), "loan_id": loan["loan_id"]},
    )
    assert (await pay(client, loan, str(EMI), TODAY - dt.timedelta(days=5))).status_code == 201
    # ...but none dated before that payment.
    earlier = await pay(client, loan, str(EMI), TODAY - dt.timedelta(days=6))
    assert earlier.status_code == 422 and "latest payment" in earlier.json()["detail"]


async def test_an_unknown_loan_or_another_customers_loan_is_not_found(
    client: AsyncClient, borrow: Borrow
) -> None:
    loan, other = await borrow(), await borrow()
    unknown = await client.post(f"/api/make-payment/{loan['customer_id']}/{10**12}", json={"amount": 100})
    crossed = await client.post(
        f"/api/make-payment/{other['customer_id']}/{loan['loan_id']}", json={"amount": 100}
    )
    for response in (unknown, crossed):
        assert response.status_code == 404 and response.headers["content-type"] == "application/problem+json"
    # Also once the loan has payments (the statement's query checks the customer on the loan's row only).
    assert (await pay(client, loan, str(EMI), None)).status_code == 201
    statement_crossed = await client.get(f"/api/view-statement/{other['customer_id']}/{loan['loan_id']}")
    assert statement_crossed.status_code == 404
    assert statement_crossed.headers["content-type"] == "application/problem+json"


async def test_a_replayed_idempotency_key_records_nothing_more(client: AsyncClient, borrow: Borrow) -> None:
    loan = await borrow()
    first = await pay(client, loan, str(EMI), None, **{"Idempotency-Key": "pay-1"})
    replay = await pay(client, loan, str(EMI), None, **{"Idempotency-Key": "pay-1"})
    assert first.status_code == replay.status_code == 201
    assert replay.headers["Idempotent-Replayed"] == "true" and replay.content == first.content
    assert len((await statement(client, loan))["payments"]) == 1
    other_body = await pay(client, loan, "20000", None, **{"Idempotency-Key": "pay-1"})
    assert other_body.status_code == 422


async def test_bad_bodies_are_problems(client: AsyncClient, borrow: Borrow) -> None:
    loan = await borrow()
    path = f"/api/make-payment/{loan['customer_id']}/{loan['loan_id']}"
    for body in (
        {},
        {"amount": 0},
        {"amount": -5},
        {"amount": "10.001"},
        {"amount": 100, "paid_on": "2026-13-01"},
        {"amount": 100, "paid_on": 20260101},
        {"amount": 100, "extra": 1},
        {"amount": True},
    ):
        response = await client.post(path, json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    assert (await statement(client, loan))["payments"] == []


async def test_the_due_dates_follow_the_start_date(client: AsyncClient, borrow: Borrow) -> None:
    loan = await borrow()
    rows = (await statement(client, loan))["installments"]
    assert [row["due_date"] for row in rows] == [add_months(TODAY, k).isoformat() for k in range(1, 13)]


async def test_the_readmes_worked_over_payment(client: AsyncClient, borrow: Borrow) -> None:
    loan = await borrow(amount=100_000, rate=8, tenure=12)
    assert loan["monthly_installment"] == 8698.84
    body = (await pay(client, loan, 30_000)).json()
    assert (body["interest"], body["principal"], body["outstanding_principal"]) == (
        666.67,
        29333.33,
        70666.67,
    )
    assert body["monthly_installment"] == 6684.06 and body["repayments_left"] == 11
    next_row = (await statement(client, loan))["installments"][1]
    assert next_row["interest"] == 471.11
