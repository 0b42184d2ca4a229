from __future__ import annotations

import pytest
from httpx import AsyncClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Customer

BODY = {
    "first_name": "Asha",
    "last_name": "Rao",
    "age": 31,
    "monthly_income": 62500,
    "phone_number": 9876543210,
}


@pytest.mark.parametrize(
    ("income", "limit"),
    [(12500, 500000), (62500, 2300000), (50000, 1800000), (1, 0), (4166.67, 200000), (1388.89, 100000)],
)
async def test_approved_limit_is_36x_income_rounded_half_up_to_a_lakh(
    client: AsyncClient, income: float, limit: int
) -> None:
    response = await client.post("/api/register", json={**BODY, "monthly_income": income})
    assert response.status_code == 201, response.text
    assert response.json()["approved_limit"] == limit


async def test_register_returns_the_customer_and_stores_it(
    client: AsyncClient, session: AsyncSession
) -> None:
    response = await client.post("/api/register", json=BODY)
    assert response.status_code == 201
    body = response.json()
    assert body == {
        "customer_id": body["customer_id"],
        "name": "Asha Rao",
        "first_name": "Asha",
        "last_name": "Rao",
        "age": 31,
        "monthly_income": 62500,
        "approved_limit": 2300000,
        "phone_number": 9876543210,
    }
    assert isinstance(body["monthly_income"], float | int) and isinstance(body["approved_limit"], float | int)
    stored = (
        await session.execute(select(Customer).where(Customer.customer_id == body["customer_id"]))
    ).scalar_one()
    assert (stored.phone_number, stored.age, str(stored.monthly_salary), str(stored.approved_limit)) == (
        9876543210,
        31,
        "62500.00",
        "2300000.00",
    )


async def test_phone_as_digit_string_is_answered_as_a_number(client: AsyncClient) -> None:
    response = await client.post("/api/register", json={**BODY, "phone_number": "9876500001"})
    assert response.status_code == 201
    assert response.json()["phone_number"] == 9876500001


async def test_duplicate_phone_is_a_conflict(client: AsyncClient) -> None:
    assert (await client.post("/api/register", json=BODY)).status_code == 201
    again = await client.post(
        "/api/register", json={**BODY, "first_name": "Other", "phone_number": "9876543210"}
    )
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    assert again.json()["status"] == 409


async def test_trailing_slash_is_answered_without_redirect(client: AsyncClient) -> None:
    response = await client.post("/api/register/", json=BODY)
    assert response.status_code == 201


async def test_names_are_trimmed(client: AsyncClient) -> None:
    response = await client.post("/api/register", json={**BODY, "first_name": "  Asha "})
    assert response.json()["first_name"] == "Asha"
    assert response.json()["name"] == "Asha Rao"
