"""Small API edges (issue #13): no -0 in answers, no loan with a 0.00 installment, no invisible names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from httpx import AsyncClient


async def test_minus_zero_is_answered_as_zero(client: AsyncClient, make_customer: Callable[..., Any]) -> None:
    customer = await make_customer(monthly_income=100_000)
    body = {"customer_id": customer["customer_id"], "loan_amount": 1000, "interest_rate": -0.0, "tenure": 12}
    response = await client.post("/api/check-eligibility", json=body)
    assert response.status_code == 200, response.text
    assert b"-0" not in response.content and response.json()["interest_rate"] == 0


@pytest.mark.parametrize("path", ["/api/check-eligibility", "/api/create-loan"])
async def test_an_installment_that_rounds_to_zero_is_refused(
    client: AsyncClient, make_customer: Callable[..., Any], path: str
) -> None:
    customer = await make_customer(monthly_income=100_000)
    body = {
        "customer_id": customer["customer_id"],
        "loan_amount": "0.01",
        "interest_rate": 100,
        "tenure": 600,
    }
    response = await client.post(path, json=body)
    assert response.status_code == 422 and response.json()["type"].endswith("/installment-too-small")
    assert "rounds to 0.00" in response.json()["detail"]
    assert (
        await client.get(f"/api/view-loans/{customer['customer_id']}", params={"status": "all"})
    ).json() == []


@pytest.mark.parametrize("name", ["\u200b", " \u200b\u200b ", "\u2060", "\u00ad", "\ufeff"])
async def test_a_name_must_show_something(client: AsyncClient, name: str) -> None:
    body = {
        "first_name": name,
        "last_name": "Rao",
        "age": 30,
        "monthly_income": 50_000,
        "phone_number": 9_123_456_789,
    }
    response = await client.post("/api/register", json=body)
    assert response.status_code == 422, response.text
    assert "visible" in response.text or "pattern" in response.text
