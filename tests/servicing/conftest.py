"""Servicing tests: a movable clock, and loans created through the API."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response

from app.servicing.schemas import NextInstallmentOut, StatementOut


@dataclass
class Clock:
    """The app's clock, moved by the test (app.state.clock reads it on every request)."""

    now: dt.datetime

    def set(self, day: dt.date) -> None:
        self.now = dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC)

    @property
    def today(self) -> dt.date:
        return self.now.date()


@pytest.fixture
def clock(app: FastAPI, now: dt.datetime) -> Clock:
    moving = Clock(now)
    app.state.clock = lambda: moving.now
    return moving


Borrow = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
def borrow(client: AsyncClient, make_customer: Callable[..., Any]) -> Borrow:
    """Register a customer and lend to them today; returns create-loan's body."""

    async def _borrow(amount: int | str = 120_000, rate: int | str = 12, tenure: int = 12) -> dict[str, Any]:
        customer = await make_customer(monthly_income=200_000)
        response = await client.post(
            "/api/create-loan",
            json={
                "customer_id": customer["customer_id"],
                "loan_amount": amount,
                "interest_rate": rate,
                "tenure": tenure,
            },
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    return _borrow


async def pay(
    client: AsyncClient, loan: dict[str, Any], amount: Any, paid_on: dt.date | None = None, **headers: str
) -> Response:
    body: dict[str, Any] = {"amount": amount}
    if paid_on is not None:
        body["paid_on"] = paid_on.isoformat()
    return await client.post(
        f"/api/make-payment/{loan['customer_id']}/{loan['loan_id']}", json=body, headers=headers
    )


async def statement(client: AsyncClient, loan: dict[str, Any]) -> dict[str, Any]:
    """The loan's statement, checked against StatementOut: every field it names and no other, in its order
    (the document is written by hand, app/servicing/statement_json.py)."""
    response = await client.get(f"/api/view-statement/{loan['customer_id']}/{loan['loan_id']}")
    assert response.status_code == 200, response.text
    document = dict(response.json())
    assert list(document) == list(StatementOut.model_fields)
    StatementOut.model_validate(document)
    following = document["next_installment"]
    assert following is None or list(following) == list(NextInstallmentOut.model_fields)
    return document
