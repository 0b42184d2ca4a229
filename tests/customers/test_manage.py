"""Customer management: read with the credit summary, find by phone, correct details."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from app.credit.policy import installment
from tests.factories import add_customer, add_loan


async def test_a_customer_with_their_credit_today(client: AsyncClient, session: AsyncSession) -> None:
    customer = await add_customer(session, monthly_salary=100_000, approved_limit=2_000_000)
    # Today is 2026-06-15. A current loan started a year ago with 10 EMIs paid on time: installment 11 (due
    # 2026-05-15) is overdue, 12 is due today (not overdue yet); a closed one; a loan started this year.
    await add_loan(
        session, customer, loan_amount=1_000_000, tenure=24, interest_rate="12",
        monthly_installment=installment(Decimal(1_000_000), Decimal(12), 24), emis_paid_on_time=10,
        start_date=dt.date(2025, 6, 15),
    )  # fmt: skip
    await add_loan(session, customer, tenure=12, emis_paid_on_time=12, start_date=dt.date(2020, 1, 10))
    await add_loan(
        session, customer, loan_amount=50_000, monthly_installment=4_000, start_date=dt.date(2026, 3, 1)
    )
    response = await client.get(f"/api/customers/{customer.customer_id}")
    assert response.status_code == 200, response.text
    body = response.json()
    credit = body["credit"]
    eligibility = (
        await client.post(
            "/api/check-eligibility",
            json={"customer_id": customer.customer_id, "loan_amount": 1000, "interest_rate": 20, "tenure": 6},
        )
    ).json()
    assert credit["credit_score"] == eligibility["credit_score"]
    assert credit["score_breakdown"] == eligibility["score_breakdown"]
    assert credit["current_debt"] == 1_050_000 and credit["available_limit"] == 950_000
    emis = float(installment(Decimal(1_000_000), Decimal(12), 24) + 4_000)
    assert credit["current_emis"] == emis == 51073.47 and credit["emi_headroom"] == 0  # over 50%: no room
    assert credit["active_loans"] == 2
    # One of the 24-month loan; three of the March loan (due April 1, May 1, June 1); none of the closed one.
    assert credit["overdue_installments"] == 1 + 3
    assert credit["days_past_due"] == (dt.date(2026, 6, 15) - dt.date(2026, 4, 1)).days
    assert body["monthly_income"] == 100_000 and body["created_at"]


async def test_unknown_customer_is_404(client: AsyncClient) -> None:
    response = await client.get("/api/customers/987654321")
    assert response.status_code == 404 and response.headers["content-type"] == "application/problem+json"


async def test_find_by_phone(client: AsyncClient, make_customer: Callable[..., Any]) -> None:
    customer = await make_customer()
    found = await client.get("/api/customers", params={"phone_number": customer["phone_number"]})
    assert [c["customer_id"] for c in found.json()] == [customer["customer_id"]]
    assert (await client.get("/api/customers", params={"phone_number": 5555555555})).json() == []
    assert (await client.get("/api/customers", params={"phone_number": "12"})).status_code == 422
    assert (await client.get("/api/customers")).status_code == 422


async def test_a_new_income_recomputes_the_limit_and_says_so(
    client: AsyncClient, make_customer: Callable[..., Any]
) -> None:
    customer = await make_customer(monthly_income=62_500)
    path = f"/api/customers/{customer['customer_id']}"
    renamed = (await client.patch(path, json={"last_name": "  Iyer "})).json()
    assert (renamed["last_name"], renamed["name"], renamed["approved_limit_recomputed"]) == (
        "Iyer",
        "Asha Iyer",
        False,
    )
    assert renamed["previous_approved_limit"] is None and renamed["approved_limit"] == 2_300_000
    raised = (await client.patch(path, json={"monthly_income": "75000"})).json()
    assert raised["approved_limit"] == 2_700_000 and raised["approved_limit_recomputed"] is True
    assert raised["previous_approved_limit"] == 2_300_000 and raised["monthly_income"] == 75_000
    assert (await client.get(path)).json()["approved_limit"] == 2_700_000


async def test_bad_patches(client: AsyncClient, make_customer: Callable[..., Any]) -> None:
    asha, ravi = await make_customer(), await make_customer()
    path = f"/api/customers/{asha['customer_id']}"
    for body in (
        {},
        {"nickname": "A"},
        {"age": 17},
        {"first_name": " "},
        {"age": None},
        {"phone_number": 123},
    ):
        response = await client.patch(path, json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    taken = await client.patch(path, json={"phone_number": ravi["phone_number"]})
    assert taken.status_code == 409 and taken.json()["field"] == "phone_number"
    assert (await client.patch("/api/customers/987654321", json={"age": 40})).status_code == 404
    assert (await client.patch("/api/customers/987654321", json={"monthly_income": 1})).status_code == 404
    assert (await client.get(path)).json()["phone_number"] == asha["phone_number"]


async def test_a_replayed_patch_changes_nothing_more(
    client: AsyncClient, make_customer: Callable[..., Any]
) -> None:
    customer = await make_customer()
    path = f"/api/customers/{customer['customer_id']}"
    first = await client.patch(path, json={"age": 40}, headers={"Idempotency-Key": "fix-age"})
    await client.patch(path, json={"age": 41})
    replay = await client.patch(path, json={"age": 40}, headers={"Idempotency-Key": "fix-age"})
    assert replay.headers["Idempotent-Replayed"] == "true" and replay.content == first.content
    assert (await client.get(path)).json()["age"] == 41  # the replay did not run again
