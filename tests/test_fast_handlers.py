"""app.fast_handlers answers every request exactly as FastAPI's own handler does.

The same requests go through the app twice: once as it runs (the hot reads on their fast handlers) and
once with a dependency override in place, which sends every request to FastAPI's generic handler. Status,
content type and body must be byte for byte the same, for good requests and for each kind of bad one the
fast handler hands over (a parameter or body that does not validate, another content type, a query
string, a missing loan).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import fastapi.routing
import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from tests.servicing.conftest import pay


def _never_called() -> None:  # pragma: no cover - only its presence in the overrides matters
    raise AssertionError("not a dependency of any route")


async def _answers(client: AsyncClient, requests: list[tuple[str, str, dict[str, Any]]]) -> list[Any]:
    answers = []
    for method, url, options in requests:
        # One request id for all: problem+json bodies carry it.
        headers = {"x-request-id": "0123456789abcdef0123456789abcdef", **options.get("headers", {})}
        response = await client.request(method, url, **{**options, "headers": headers})
        answers.append(
            (method, url, response.status_code, response.headers.get("content-type"), response.content)
        )
    return answers


@pytest.fixture
async def requests(
    client: AsyncClient, make_customer: Callable[..., Any]
) -> list[tuple[str, str, dict[str, Any]]]:
    customer = await make_customer(monthly_income=90_000)
    cid = customer["customer_id"]
    created = await client.post(
        "/api/create-loan",
        json={"customer_id": cid, "loan_amount": 60_000, "interest_rate": 12, "tenure": 12},
    )
    assert created.status_code == 201, created.text
    loan = created.json()
    assert (await pay(client, loan, str(loan["monthly_installment"]))).status_code == 201
    lid = loan["loan_id"]
    eligibility = {"customer_id": cid, "loan_amount": 50_000, "interest_rate": 10.5, "tenure": 24}
    json_type = {"content-type": "application/json"}
    return [
        ("POST", "/api/check-eligibility", {"json": eligibility}),
        ("POST", "/api/check-eligibility/", {"json": eligibility}),
        ("POST", "/api/check-eligibility", {"json": {**eligibility, "customer_id": cid + 10_000}}),
        ("POST", "/api/check-eligibility", {"json": {**eligibility, "loan_amount": -5}}),
        ("POST", "/api/check-eligibility", {"json": {**eligibility, "tenure": "12"}}),
        ("POST", "/api/check-eligibility", {"json": {**eligibility, "extra": 1}}),
        ("POST", "/api/check-eligibility", {"json": [eligibility]}),
        ("POST", "/api/check-eligibility", {"content": b"{not json", "headers": json_type}),
        ("POST", "/api/check-eligibility", {"content": b"", "headers": json_type}),
        ("POST", "/api/check-eligibility", {"content": b"NaN", "headers": json_type}),
        ("POST", "/api/check-eligibility", {"json": eligibility, "params": {"debug": "1"}}),
        (
            "POST",
            "/api/check-eligibility",
            {
                "content": str(eligibility).replace("'", '"').encode(),
                "headers": {"content-type": "text/plain"},
            },
        ),
        (
            "POST",
            "/api/check-eligibility",
            {
                "content": str(eligibility).replace("'", '"').encode(),
                "headers": {"content-type": "application/json; charset=utf-8"},
            },
        ),
        ("GET", f"/api/view-loan/{lid}", {}),
        ("GET", f"/api/view-loan/{lid}/", {}),
        ("GET", f"/api/view-loan/{lid + 10_000}", {}),
        ("GET", "/api/view-loan/0", {}),
        ("GET", "/api/view-loan/abc", {}),
        ("GET", f"/api/view-loan/0{lid}", {}),
        ("GET", "/api/view-loan/99999999999999999999", {}),
        ("GET", f"/api/view-loan/{lid}", {"params": {"x": "1"}}),
        ("GET", f"/api/view-loans/{cid}", {}),
        ("GET", f"/api/view-loans/{cid}/", {}),
        ("GET", f"/api/view-loans/{cid}", {"params": {"status": "all"}}),
        ("GET", f"/api/view-loans/{cid}", {"params": {"status": "nope"}}),
        ("GET", f"/api/view-loans/{cid + 10_000}", {}),
        ("GET", f"/api/view-statement/{cid}/{lid}", {}),
        ("GET", f"/api/view-statement/{cid}/{lid}/", {}),
        ("GET", f"/api/view-statement/{cid + 1}/{lid}", {}),
        ("GET", f"/api/view-statement/{cid}/x", {}),
        ("GET", f"/api/customers/{cid}", {}),
        ("GET", f"/api/customers/{cid + 10_000}", {}),
        ("GET", "/api/customers/-1", {}),
    ]


async def test_fast_and_generic_handlers_answer_alike(
    app: FastAPI, client: AsyncClient, requests: list[tuple[str, str, dict[str, Any]]]
) -> None:
    fast = await _answers(client, requests)
    app.dependency_overrides[_never_called] = _never_called
    try:
        generic = await _answers(client, requests)
    finally:
        app.dependency_overrides.clear()
    assert fast == generic
    statuses = {answer[2] for answer in fast}
    assert {200, 404, 422} <= statuses  # the corpus reaches each kind of answer


async def test_good_reads_skip_fastapis_dependency_solving(
    app: FastAPI,
    client: AsyncClient,
    requests: list[tuple[str, str, dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    solved = []
    generic_solve = fastapi.routing.solve_dependencies

    async def counting_solve(**kwargs: Any) -> Any:
        solved.append(kwargs["request"].url.path)
        return await generic_solve(**kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counting_solve)
    good = [request for request in requests if not request[2] and not request[1].endswith("/")][:1]
    good += [requests[0]]  # check-eligibility with a JSON body
    answers = await _answers(client, good)
    assert [answer[2] for answer in answers] == [200, 200] and solved == []
    await _answers(client, [requests[3]])  # a body that does not validate: FastAPI's handler answers
    assert solved == ["/api/check-eligibility"]
