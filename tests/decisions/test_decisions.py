"""Every create-loan decision is on record, append-only, and explained with its figures."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from app.credit.policy import POLICY
from tests.factories import add_customer, add_loan


def application(customer_id: int, amount: Any = 100_000, rate: Any = 10, tenure: int = 24) -> dict[str, Any]:
    return {"customer_id": customer_id, "loan_amount": amount, "interest_rate": rate, "tenure": tenure}


async def test_approvals_and_rejections_are_recorded_with_what_decided_them(
    client: AsyncClient, session: AsyncSession
) -> None:
    customer = await add_customer(session, monthly_salary=100_000, approved_limit=2_000_000)
    await add_loan(session, customer, loan_amount=1_000_000, tenure=24, start_date=dt.date(2025, 6, 15))
    approved = (await client.post("/api/create-loan", json=application(customer.customer_id))).json()
    rejected = (
        await client.post("/api/create-loan", json=application(customer.customer_id, 1_500_000, 12, 600))
    ).json()
    assert approved["loan_approved"] and not rejected["loan_approved"]

    first = (await client.get(f"/api/decisions/{approved['decision_id']}")).json()
    assert first["customer_id"] == customer.customer_id and first["approved"] is True
    assert first["loan_id"] == approved["loan_id"] and first["policy_version"] == POLICY.version
    assert first["application"] == {"loan_amount": 100000.0, "interest_rate": 10.0, "tenure": 24}
    assert first["profile"]["approved_limit"] == 2_000_000 and first["profile"]["current_debt"] == 1_000_000
    assert first["profile"]["emis_due"] == 12 and first["profile"]["emis_paid_due"] == 0
    assert (first["credit_score"], first["corrected_interest_rate"], first["reasons"]) == (
        35,
        12.0,
        ["rate_corrected"],
    )
    assert first["monthly_installment"] == approved["monthly_installment"] == 4707.35
    assert first["request_id"] and first["decided_at"].startswith("2026-06-15T12:00:00")  # the app's clock
    assert first["explanation"] == [
        "Approved at 12%, raised from the requested 10%: credit score 35 is in the slab for scores above 30, "
        "whose minimum rate is 12%"
    ]
    second = (await client.get(f"/api/decisions/{rejected['decision_id']}")).json()
    assert (second["approved"], second["loan_id"], second["reasons"]) == (False, None, ["limit_exceeded"]), (
        second
    )
    # The profile is the one scored then: it includes the loan the first decision created.
    assert second["profile"]["current_debt"] == 1_100_000
    assert second["explanation"] == [
        "Total debt would be 2,600,000 (current 1,100,000 plus 1,500,000 requested), above the approved "
        "limit of 2,000,000"
    ]


async def test_a_rejection_explains_its_principal_reasons_most_important_first(
    client: AsyncClient, session: AsyncSession
) -> None:
    customer = await add_customer(session, monthly_salary=50_000, approved_limit=1_800_000)
    await add_loan(
        session, customer, loan_amount=1_200_000, tenure=36, monthly_installment=20_000,
        emis_paid_on_time=12, start_date=dt.date(2025, 6, 15),
    )  # fmt: skip
    made = (
        await client.post("/api/create-loan", json=application(customer.customer_id, 900_000, 12, 24))
    ).json()
    decision = (await client.get(f"/api/decisions/{made['decision_id']}")).json()
    assert decision["reasons"] == ["limit_exceeded", "emi_over_half_salary"]
    limit, emi = decision["explanation"]
    assert limit.startswith("Total debt would be 2,100,000") and "approved limit of 1,800,000" in limit
    assert f"plus {decision['monthly_installment']:,.2f} for this loan" in emi
    assert "above 50% of the monthly salary of 50,000 (25,000)" in emi


async def test_a_score_no_slab_takes_is_explained_with_its_components(
    client: AsyncClient, session: AsyncSession
) -> None:
    # Debt above the limit: the score is 0, and that reason comes first.
    customer = await add_customer(session, monthly_salary=50_000, approved_limit=100_000)
    await add_loan(session, customer, loan_amount=150_000, tenure=36, start_date=dt.date(2026, 1, 15))
    made = (await client.post("/api/create-loan", json=application(customer.customer_id, 10_000))).json()
    decision = (await client.get(f"/api/decisions/{made['decision_id']}")).json()
    assert decision["reasons"] == ["debt_over_limit", "credit_score_too_low", "limit_exceeded"]
    assert [line.split(" ")[0] for line in decision["explanation"]] == ["Current", "Credit", "Total"]
    assert (
        "Current debt of 150,000 is already above the approved limit of 100,000" in decision["explanation"][0]
    )
    assert "payment history 0.00/35" in decision["explanation"][1]


async def test_check_eligibility_records_nothing(
    client: AsyncClient, make_customer: Callable[..., Any]
) -> None:
    customer = await make_customer()
    await client.post("/api/check-eligibility", json=application(customer["customer_id"]))
    page = (await client.get(f"/api/customers/{customer['customer_id']}/decisions")).json()
    assert page == {"items": [], "next_before": None}


async def test_decisions_are_append_only(client: AsyncClient, session: AsyncSession) -> None:
    customer = await add_customer(session, monthly_salary=100_000, approved_limit=2_000_000)
    made = (await client.post("/api/create-loan", json=application(customer.customer_id))).json()
    for statement in (
        "UPDATE credit_decisions SET approved = false, loan_id = NULL WHERE decision_id = :id",
        "DELETE FROM credit_decisions WHERE decision_id = :id",
    ):
        savepoint = await session.begin_nested()
        with pytest.raises(DBAPIError, match="append-only"):
            await session.execute(text(statement), {"id": made["decision_id"]})
        await savepoint.rollback()
    assert (await client.get(f"/api/decisions/{made['decision_id']}")).json()["approved"] is True


async def test_pages_are_newest_first_and_stable_while_decisions_arrive(
    client: AsyncClient, session: AsyncSession
) -> None:
    customer = await add_customer(session, monthly_salary=500_000, approved_limit=20_000_000)
    made = [
        (await client.post("/api/create-loan", json=application(customer.customer_id, 1000 + n))).json()[
            "decision_id"
        ]
        for n in range(5)
    ]
    path = f"/api/customers/{customer.customer_id}/decisions"
    first = (await client.get(path, params={"limit": 2})).json()
    assert [d["decision_id"] for d in first["items"]] == made[:2:-1][:2] == [made[4], made[3]]
    # New decisions arrive between pages: the next pages go on where the first stopped.
    for n in range(3):
        await client.post("/api/create-loan", json=application(customer.customer_id, 2000 + n))
    second = (await client.get(path, params={"limit": 2, "before": first["next_before"]})).json()
    third = (await client.get(path, params={"limit": 2, "before": second["next_before"]})).json()
    assert [d["decision_id"] for d in second["items"] + third["items"]] == [made[2], made[1], made[0]]
    assert third["next_before"] is None
    assert (await client.get("/api/customers/987654321/decisions")).status_code == 404
    assert (await client.get(path, params={"limit": 0})).status_code == 422


async def test_unknown_decision_is_404(client: AsyncClient) -> None:
    response = await client.get("/api/decisions/987654321")
    assert response.status_code == 404 and response.headers["content-type"] == "application/problem+json"


def test_amounts_in_explanations() -> None:
    from app.credit.explain import amount

    assert (amount(Decimal("2100000.00")), amount(Decimal("4707.35"))) == ("2,100,000", "4,707.35")
