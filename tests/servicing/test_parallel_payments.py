"""Parallel payments on one loan apply one after another, each on the state the previous one left.

A committed database and the app on its real engine: every request runs in its own connection and
transaction, so the loan's row lock is what serialises them (or fails to).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from decimal import Decimal

import pytest

from tests.live import connect, live_app, register

pytestmark = [pytest.mark.asyncio, pytest.mark.live]

PARALLEL = 24


async def test_24_parallel_emi_payments_on_a_12_installment_loan() -> None:
    async with live_app("credit_payments") as (url, _, client):
        customer = await register(client, monthly_income=100_000)
        created = await client.post(
            "/api/create-loan",
            json={
                "customer_id": customer["customer_id"],
                "loan_amount": 120_000,
                "interest_rate": 14,
                "tenure": 12,
            },
        )
        assert created.status_code == 201, created.text
        loan_id, emi = created.json()["loan_id"], created.json()["monthly_installment"]
        path = f"/api/make-payment/{customer['customer_id']}/{loan_id}"

        responses = await asyncio.gather(*(client.post(path, json={"amount": emi}) for _ in range(PARALLEL)))

        statuses = Counter(response.status_code for response in responses)
        assert all(status < 500 for status in statuses), statuses
        settled = sorted(r.json()["installment_number"] for r in responses if r.status_code == 201)
        connection = await connect(url)
        try:
            loan = await connection.fetchrow("SELECT * FROM loans WHERE loan_id = $1", loan_id)
            stored = await connection.fetch(
                "SELECT installment_number, principal FROM payments WHERE loan_id = $1 ORDER BY payment_id",
                loan_id,
            )
        finally:
            await connection.close()

    # The EMI (10774.45) is not the last installment's payoff (10774.51): 1..11 settle, in order, once each.
    assert settled == list(range(1, 12)), (settled, statuses)
    assert [row["installment_number"] for row in stored] == list(range(1, 12))
    refused = [r for r in responses if r.status_code != 201]
    assert {r.status_code for r in refused} <= {409, 422} and len(refused) == PARALLEL - 11
    assert all(r.json()["type"].endswith("/payment-not-accepted") for r in refused)
    assert sum((row["principal"] for row in stored), Decimal(0)) + loan["outstanding_principal"] == Decimal(
        120_000
    )
    assert (
        loan["installments_paid"] == 11 and loan["emis_paid_on_time"] == 11 and loan["repayments_left"] == 1
    )
    # Every response saw the balance the payment before it left: their outstanding figures strictly fall.
    outstanding = [
        r.json()["outstanding_principal"]
        for r in sorted(
            (r for r in responses if r.status_code == 201), key=lambda r: r.json()["installment_number"]
        )
    ]
    assert outstanding == sorted(outstanding, reverse=True) and len(set(outstanding)) == 11
