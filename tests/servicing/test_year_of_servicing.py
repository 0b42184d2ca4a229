"""A year of servicing with the injectable clock: payments feed the credit score; arrears are classified."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from httpx import AsyncClient

from app.credit.dates import add_months
from tests.servicing.conftest import Clock, pay, statement

START = dt.date(2026, 1, 31)  # a month-end start: due dates clamp to Feb 28, Apr 30...


async def _borrow_on(client: AsyncClient, clock: Clock, make_customer: Callable[..., Any]) -> dict[str, Any]:
    clock.set(START)
    customer = await make_customer(monthly_income=100_000)
    response = await client.post(
        "/api/create-loan",
        json={
            "customer_id": customer["customer_id"],
            "loan_amount": 120_000,
            "interest_rate": 14,
            "tenure": 12,
        },
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _eligibility(client: AsyncClient, customer_id: int) -> dict[str, Any]:
    response = await client.post(
        "/api/check-eligibility",
        json={"customer_id": customer_id, "loan_amount": 10_000, "interest_rate": 16, "tenure": 12},
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _pay_every_installment(
    client: AsyncClient, clock: Clock, loan: dict[str, Any], late: int | None
) -> None:
    for number in range(1, 13):
        due = add_months(START, number)
        clock.set(due + dt.timedelta(days=1) if number == late else due)
        due_now = (await statement(client, loan))["next_installment"]
        assert due_now["due_date"] == due.isoformat()
        response = await pay(client, loan, due_now["amount"])  # paid_on: today
        assert response.status_code == 201, response.text
        assert response.json()["on_time"] is (number != late)


async def test_paying_every_installment_on_its_due_date(
    client: AsyncClient, clock: Clock, make_customer: Callable[..., Any]
) -> None:
    loan = await _borrow_on(client, clock, make_customer)
    await _pay_every_installment(client, clock, loan, late=None)

    result = await statement(client, loan)
    assert result["loan_status"] == "paid_off" and result["outstanding_principal"] == 0
    assert [row["status"] for row in result["installments"]] == ["paid_on_time"] * 12
    assert sum(Decimal(str(row["principal"])) for row in result["installments"]) == Decimal(120_000)
    assert (
        result["payoff_amount"] == 0 and result["next_installment"] is None and result["repayments_left"] == 0
    )
    score = await _eligibility(client, loan["customer_id"])
    assert score["score_breakdown"]["payment_history"] == 35.0
    assert score["score_breakdown"]["track_record"] == 3.0  # one closed loan of five
    closed = (await client.get(f"/api/view-loans/{loan['customer_id']}", params={"status": "closed"})).json()
    assert [item["loan_id"] for item in closed] == [loan["loan_id"]]
    assert (await client.get(f"/api/view-loans/{loan['customer_id']}")).json() == []


async def test_one_payment_a_day_late(
    client: AsyncClient, clock: Clock, make_customer: Callable[..., Any]
) -> None:
    loan = await _borrow_on(client, clock, make_customer)
    await _pay_every_installment(client, clock, loan, late=6)

    result = await statement(client, loan)
    statuses = [row["status"] for row in result["installments"]]
    assert statuses.count("paid_on_time") == 11 and statuses[5] == "paid_late"
    score = await _eligibility(client, loan["customer_id"])
    assert score["score_breakdown"]["payment_history"] == round(35 * 11 / 12, 2) == 32.08


async def test_no_payments_the_loan_falls_into_arrears(
    client: AsyncClient, clock: Clock, make_customer: Callable[..., Any]
) -> None:
    loan = await _borrow_on(client, clock, make_customer)
    first_due = add_months(START, 1)  # 2026-02-28
    seen: list[tuple[str, int, str]] = []
    scores: list[int] = []
    for days in (0, 1, 30, 31, 60, 61, 90, 91, 200):
        clock.set(first_due + dt.timedelta(days=days))
        result = await statement(client, loan)
        seen.append((result["loan_status"], result["days_past_due"], result["delinquency_class"]))
        scores.append((await _eligibility(client, loan["customer_id"]))["credit_score"])
        overdue = [row for row in result["installments"] if row["status"] == "overdue"]
        assert all(dt.date.fromisoformat(row["due_date"]) < clock.today for row in overdue)
        assert result["next_due_date"] == first_due.isoformat()
    assert seen == [
        ("active", 0, "standard"),  # due today is not overdue yet
        ("overdue", 1, "SMA-0"),
        ("overdue", 30, "SMA-0"),
        ("overdue", 31, "SMA-1"),
        ("overdue", 60, "SMA-1"),
        ("overdue", 61, "SMA-2"),
        ("overdue", 90, "SMA-2"),
        ("overdue", 91, "NPA"),
        ("overdue", 200, "NPA"),
    ]
    items = (await client.get(f"/api/view-loans/{loan['customer_id']}")).json()
    assert items[0]["loan_status"] == "overdue" and items[0]["repayments_left"] == 12
    before = await _score_before_first_due(client, clock, loan)
    assert scores == sorted(scores, reverse=True) and scores[-1] < before, (before, scores)


async def _score_before_first_due(client: AsyncClient, clock: Clock, loan: dict[str, Any]) -> int:
    clock.set(START + dt.timedelta(days=5))
    return int((await _eligibility(client, loan["customer_id"]))["credit_score"])
